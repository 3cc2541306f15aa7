"""What every command runs on: errors and exit codes, paths, flag checks, the
command-line wrapper, processes and devices."""
