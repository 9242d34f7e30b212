"""Worker side of ``test`` tasks: warm pytest sessions and the code they run in."""
