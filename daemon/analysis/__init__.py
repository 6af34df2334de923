"""Result analysis: phase windows, job results, sweep points and per-request figures from a job's trace and
markers; pure functions of what was recorded."""
