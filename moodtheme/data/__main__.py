"""`python -m moodtheme.data COMMAND ...`: one entry point for the data tools."""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help). Each function takes argv and returns an exit code.
COMMANDS = {
    "labels": (
        "moodtheme.data.jamendo",
        "labels_cli",
        "write the bool label matrix of a split TSV",
    ),
    "check": ("moodtheme.data.check", "cli", "validate every melspec file of a split"),
    "download": ("moodtheme.data.download", "cli", "download and verify the official melspecs"),
    "synth": ("moodtheme.data.synth", "cli", "generate the synthetic MTG-Jamendo dataset"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
        print("usage: python -m moodtheme.data COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command '{argv[0]}'", file=sys.stderr)
            return 2
        return 0
    module, func, _ = COMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
