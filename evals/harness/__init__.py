"""The eval harness: `loracle eval all` runs registered suites into one run folder (results.json,
report.md, PNG plots) and records the run in the database; `loracle eval compare` diffs two runs."""
