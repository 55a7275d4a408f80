from __future__ import annotations

from gitops_push.cli import main

if __name__ == "__main__":
    main()
