"""Report writers. Generated output goes to reports/output/ (git-ignored)."""
