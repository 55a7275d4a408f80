from __future__ import annotations

from gitops_push.cli.app import main

if __name__ == "__main__":
    main()
