"""`bench failed`: the runs of a profile that failed for good (FAILED result files), to list, count or delete so
that the workflow runs them again."""

import json
import sys

from bench import experiments as ex
from bench.run.results import result_paths


def failed(profile: str, results: str = "results", delete: bool = False, summary: bool = False):
    """The result files of runs that failed for good; with `delete`, removed so that the workflow runs them again.
    With `summary` (the workflow's last job): FAILED and DIVERGED counted with their first errors, and exit status 1
    when a run failed for good, so that a workflow whose jobs all 'succeeded' by recording failures says so."""
    ex.profile_settings(profile)  # an unknown profile is an error, not an empty list
    found, diverged = [], []
    for path in result_paths(profile, results):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            print(f"{path}: not a readable result file (bench aggregate says why)")
            continue
        status = result.get("status") if isinstance(result, dict) else None
        if status not in ("FAILED", "DIVERGED"):
            continue
        line = f"{path}: {(str(result.get('error') or '').splitlines() or [status])[0]}"
        if status == "FAILED":
            found.append(line)
            if delete:
                path.unlink()
        else:
            diverged.append(line)
    if summary:
        for title, lines in (("FAILED", found), ("DIVERGED", diverged)):
            print(f"{len(lines)} {title} run(s) in {results}/{profile}" + (":" if lines else ""))
            for line in lines[:10]:
                print(f"  {line}")
            if len(lines) > 10:
                print(f"  ... and {len(lines) - 10} more (bench failed --profile {profile})")
        if found:
            print(
                f"bench: {len(found)} run(s) failed for good (the reports show them as FAILED); fix the cause, "
                f"then `bench failed --profile {profile} --delete` and run the workflow again",
                file=sys.stderr,
            )
            raise SystemExit(1)
        return
    for line in found:
        print(line)
    print(
        f"{len(found)} failed runs" + (" deleted: re-run the workflow to retry them" if delete and found else ""),
        file=sys.stderr,
    )
