"""Renders every manifest docs/deploy.md applies, as a reader following it gets them, for
`make lint` to validate (issue 29: each manifest the docs apply renders and validates).

    python scripts/render_deploy_docs.py OUT

writes OUT/docs-<name>.yaml for each overlay the docs write (`cat > deploy/<name>/
kustomization.yaml <<'EOF'`, or `<<YAML` with shell variables, filled with the docs' own
example values) and OUT/docs-apply-<n>.yaml for each `kubectl apply -f - <<'EOF'` block. It
renders in a copy of the repository in which the secret files git never holds are filled
as scripts/render-k8s.sh fills them. Prints the files it wrote, one a line, each with
`rayjob` or `k8s` (how `make lint` checks it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "deploy.md"
OVERLAY = re.compile(
    r"cat > (deploy/[\w-]+)/kustomization\.yaml <<'?(EOF|YAML)'?\n(.*?)\n\2\n", re.M | re.S
)
APPLY = re.compile(r"^kubectl apply -f - <<'EOF'\n(.*?)\nEOF\n", re.M | re.S)
# The docs' example values for the shell variables their unquoted heredocs expand.
VARIABLES = {"$BUCKET": "s3://my-bucket/cai-judge"}


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    if found is None:
        raise SystemExit("kubectl not found: run scripts/setup.sh")
    return found


def main(out: Path) -> int:
    text = DOC.read_text()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        shutil.copytree(ROOT / "k8s", tree / "k8s")
        keys = tree / "k8s/components/api-keys"
        if not (keys / "hashes.json").exists():
            (keys / "hashes.json").write_text('["' + "0" * 64 + '"]\n')
        if not (keys / "admin-hashes.json").exists():
            (keys / "admin-hashes.json").write_text("[]\n")
        redis_env = tree / "k8s/components/redis-secret/redis.env"
        if not redis_env.exists():
            redis_env.write_text(
                "password=placeholder\nurl=redis://:placeholder@cai-judge-redis:6379/0\n"
                "cache-url=redis://:placeholder@cai-judge-redis-cache:6379/0\n"
            )
        overlays = OVERLAY.findall(text)
        if not overlays:
            raise SystemExit(f"{DOC}: no `cat > deploy/NAME/kustomization.yaml` block")
        for name, quote, body in overlays:
            if quote == "YAML":
                for variable, value in VARIABLES.items():
                    body = body.replace(variable, value)
            if "$" in body and quote == "YAML":
                raise SystemExit(f"{DOC}: {name}: a shell variable with no example value")
            (tree / name).mkdir(parents=True)
            (tree / name / "kustomization.yaml").write_text(body + "\n")
            rendered = subprocess.run(
                [kubectl(), "kustomize", str(tree / name)],
                capture_output=True,
                text=True,
                check=False,
            )
            if rendered.returncode != 0:
                raise SystemExit(f"{DOC}: {name} does not render:\n{rendered.stderr}")
            path = out / f"docs-{Path(name).name}.yaml"
            path.write_text(rendered.stdout)
            kind = "rayjob" if "kind: RayJob" in rendered.stdout else "k8s"
            print(f"{path} {kind}")
        for index, body in enumerate(APPLY.findall(text)):
            path = out / f"docs-apply-{index}.yaml"
            path.write_text(body + "\n")
            print(f"{path} k8s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
