"""The pipeline layer: recipes of members, SLURM submission, the plan, and ablations."""
