"""A pip.py at the top of the repo: if `python -m pip` ever imported it, it would write these."""
for _path in ("/root/pwned-pipshadow", "/etc/pwned-pipshadow"):
    with open(_path, "w") as _handle:
        _handle.write("repo pip.py ran\n")
raise SystemExit(0)
