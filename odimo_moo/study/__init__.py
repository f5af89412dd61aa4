"""Study drivers (Optuna, pymoo), configuration and reports."""
