"""The application shell: the command line, the in-process scan runner, the `dev`/`demo` launcher
and the agent simulator."""
