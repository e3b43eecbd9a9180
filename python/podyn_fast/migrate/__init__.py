"""migrate: plan the tables, load them by parallel scan in worker processes, or print the SQL (dry run)."""
