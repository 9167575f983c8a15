"""The queue's scheduled job: one line per run (time, release, version) in the persisted
instance/ folder, so a test can count runs and see which release each ran."""

import os
import time

from version import VERSION

line = f"{time.time():.3f} {os.environ.get('FLEET_RELEASE')} {VERSION}"
with open(os.path.join("instance", "ticks.log"), "a") as log:
    log.write(line + "\n")
print(f"tick {line}")
