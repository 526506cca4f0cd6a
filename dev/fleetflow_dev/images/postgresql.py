"""``docker.io/fleetflow/postgresql:15``: PostgreSQL 15 from Debian's packages, for CloudNativePG and psql.

CloudNativePG runs its instance manager (copied in by an init container) inside this image and
expects PostgreSQL's binaries on PATH and user ``postgres`` as uid 26, the uid its pods run as
(initdb refuses a uid with no passwd entry). mmdebstrap assembles a minimal bookworm root file
system as a tar from the same mirrors this machine's apt uses; a hook renumbers ``postgres`` to
26 (its group keeps its number: gid 26 is Debian's ``tape``, and CNPG's own images change only
the uid). Documentation, man pages, translations, the JIT (LLVM, half the size) and the package
lists are left out, and no cluster is created at install time. The same image runs an app Job's
``psql``.
"""

from __future__ import annotations

import os
from pathlib import Path

from fleetflow_dev.images import commands
from fleetflow_dev.images.layout import Layout
from fleetflow_dev.images.plan import Plan, Progress, finish

REFERENCE = "docker.io/fleetflow/postgresql:15"
# Change this string when the recipe below changes in a way its other inputs do not show.
RECIPE = "postgresql/1: mmdebstrap minbase tar, postgres uid 26, one layer"
SUITE = "bookworm"
PACKAGES = ("postgresql-15", "postgresql-client-15", "ca-certificates", "tzdata")
# This machine's apt sources (deb.debian.org, also mmdebstrap's default for a stable suite), spelled out.
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
BIN = "/usr/lib/postgresql/15/bin"
PATH = f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
POSTGRES_UID = 26
# Files dpkg does not unpack: documentation, and the JIT (llvmjit.so and what only it links to);
# without its provider PostgreSQL runs with JIT disabled, which CNPG's defaults do not rely on.
EXCLUDED = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
    "/usr/lib/postgresql/15/lib/llvmjit*",
    "/usr/lib/postgresql/15/lib/bitcode/*",
    "/usr/lib/x86_64-linux-gnu/libLLVM-*",
    "/usr/lib/x86_64-linux-gnu/libz3.so*",
)
# Before any package is installed: postgresql-common must not create (and initdb) a "main" cluster.
ESSENTIAL_HOOK = (
    'mkdir -p "$1/etc/postgresql-common/createcluster.d" && '
    'echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/fleetflow.conf"'
)
CUSTOMIZE_HOOK = f"""set -e
old=$(chroot "$1" id -u postgres)
chroot "$1" usermod -u {POSTGRES_UID} postgres
chroot "$1" find / -xdev -uid "$old" -exec chown -h {POSTGRES_UID} {{}} +
rm -rf "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/apt/* "$1"/var/log/*.log
"""
MMDEBSTRAP_TIMEOUT = 1800.0


def plan() -> Plan:
    inputs = {
        "recipe": RECIPE,
        "suite": SUITE,
        "packages": ",".join(PACKAGES),
        "mirrors": "\n".join(MIRRORS),
        "excluded": "\n".join(EXCLUDED),
        "hooks": ESSENTIAL_HOOK + "\n" + CUSTOMIZE_HOOK,
        "path": PATH,
    }

    def build(scratch: Path, progress: Progress) -> Path:
        progress(f"building {REFERENCE} with mmdebstrap ({SUITE}, {len(PACKAGES)} packages; about a minute)")
        rootfs = scratch / "rootfs.tar"
        commands.run(
            [
                "mmdebstrap",
                "--mode=root",
                "--variant=minbase",
                "--format=tar",
                f"--include={','.join(PACKAGES)}",
                "--skip=output/dev",
                '--aptopt=Acquire::Retries "3"',
                *(f"--dpkgopt=path-exclude={pattern}" for pattern in EXCLUDED),
                f"--essential-hook={ESSENTIAL_HOOK}",
                f"--customize-hook={CUSTOMIZE_HOOK}",
                SUITE,
                str(rootfs),
                *MIRRORS,
            ],
            timeout=MMDEBSTRAP_TIMEOUT,
            name="mmdebstrap",
            env=dict(os.environ, TMPDIR=str(scratch)),  # its chroot lives in the scratch directory
        )
        layout = Layout(scratch / "oci", REFERENCE.rsplit(":", 1)[1]).create()
        layout.add_layer(rootfs, f"mmdebstrap --variant=minbase --include={','.join(PACKAGES)} {SUITE}")
        rootfs.unlink()
        layout.configure(cmd=["/bin/bash"], env={"PATH": PATH})
        return finish(layout, REFERENCE, scratch)

    return Plan(REFERENCE, "postgresql", inputs, build)
