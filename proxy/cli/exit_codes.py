"""The exit statuses of every `bluegreen-proxy` command."""

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and something failed (a check, a call, a comparison)
EXIT_USAGE = 2  # the command cannot run as asked (a flag, the config, a file); argparse's own status too
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
