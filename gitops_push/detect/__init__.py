"""What changed and what it touches: ``discovery.py`` (finding stacks), ``inputs.py`` (the
engine-neutral index of what each stack reads from outside its directory) and
``changes.py`` (the commit range, changed and removed stacks, their waves)."""
