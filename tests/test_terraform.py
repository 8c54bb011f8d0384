"""Infrastructure as code, checked offline: terraform/ parsed with python-hcl2 (typed and described variables, IAM
scoped to named resources, every bucket encrypted, versioned and private, the outputs infra/aws reads), `terraform
fmt` where a terraform binary exists, the kustomize overlays rendered and validated against the Kubernetes schemas,
Checkov over terraform/, infra/ and the Dockerfiles, hadolint on the Dockerfiles."""

import functools
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERRAFORM = os.path.join(ROOT, "terraform")
INFRA = os.path.join(ROOT, "infra")
AWS = os.path.join(INFRA, "aws")
KUBERNETES_VERSION = "1.31.0"  # the EKS version envs/*/variables.tf defaults to
# Where AWS requires "*" as a policy's resource: a KMS key policy's statements apply to that key alone.
WILDCARD_RESOURCES_ALLOWED = {("kms", "key")}


def unquote(value):
    """python-hcl2 keeps HCL's quotes on strings and block labels."""
    return value[1:-1] if isinstance(value, str) and len(value) > 1 and value[0] == value[-1] == '"' else value


@functools.cache
def parsed() -> dict[str, dict]:
    import hcl2

    found = {}
    for path in sorted(glob.glob(os.path.join(TERRAFORM, "**", "*.tf"), recursive=True)):
        with open(path) as handle:
            found[os.path.relpath(path, TERRAFORM)] = hcl2.load(handle)
    assert found, "no terraform files"
    return found


def blocks(kind: str):
    """(file, type, name, body) of every ``resource``/``data`` block, or (file, name, body) of ``variable``,
    ``output`` and ``module`` blocks."""
    for path, document in parsed().items():
        for entry in document.get(kind, []):
            for label, body in entry.items():
                if kind in ("resource", "data"):
                    for name, inner in body.items():
                        yield path, unquote(label), unquote(name), inner
                else:
                    yield path, unquote(label), body


def stack_outputs() -> set[str]:
    return {name for path, name, _ in blocks("output") if path.startswith(os.path.join("modules", "stack"))}


def test_every_variable_is_typed_and_described():
    variables = list(blocks("variable"))
    assert len(variables) > 40
    untyped = [f"{path}: {name}" for path, name, body in variables if not body.get("type")]
    undescribed = [f"{path}: {name}" for path, name, body in variables
                   if len(unquote(body.get("description", ""))) < 10]
    assert not untyped and not undescribed, (untyped, undescribed)
    for path, name, body in blocks("output"):
        assert len(unquote(body.get("description", ""))) >= 10, f"{path}: output {name} is not described"
        assert "password" not in name and "token" not in name.replace("_secret_arn", ""), f"{path}: {name}"


def _statements(document: dict) -> list[dict]:
    found = list(document.get("statement", []))
    for dynamic in document.get("dynamic", []):
        for body in dynamic.values():
            found.extend(body.get("content", []))
    return found


def test_iam_policies_name_their_resources():
    """Every IAM policy statement names the resources it reaches: no bare "*" (but in a KMS key policy, where "*"
    is the key itself), and the service accounts' roles (modules/stack: module "irsa") name buckets and keys only."""
    checked = 0
    for path, kind, name, body in blocks("data"):
        if kind != "aws_iam_policy_document":
            continue
        module = path.split(os.sep)[1]
        for statement in _statements(body):
            resources = statement.get("resources", [])
            if not resources:
                assert statement.get("principals"), f"{path}: {name} has a statement without resources"  # a trust
                continue
            checked += 1
            if isinstance(resources, str):  # the IRSA module's dynamic statements: checked at their source below
                continue
            if (module, name) not in WILDCARD_RESOURCES_ALLOWED:
                assert all(unquote(r) != "*" for r in resources), f"{path}: {name} allows every resource"
    (irsa,) = [body for path, name, body in blocks("module") if name == "irsa"]
    roles = irsa["roles"]
    assert set(roles) == {"portal", "model-server", "model-server-logging", "pipeline", "monitoring"}
    for role, spec in roles.items():
        for statement in spec["statements"]:
            for resource in statement["resources"]:
                text = unquote(resource)
                named = r"^\$\{local\.(bucket\[\\?\"[a-z-]+\\?\"\]|s3_key)\}(/([a-z-]+/)*\*)?$"
                assert re.match(named, text), (role, text)
                checked += 1
    # Least privilege as the issue states it: the portal touches the scan bucket only, TF Serving reads models only.
    def buckets(role):
        return {re.search(r'bucket\[\\?"([a-z-]+)', unquote(r)).group(1) for s in roles[role]["statements"]
                for r in s["resources"] if "bucket[" in r}
    assert buckets("portal") == {"scans"} and buckets("model-server") == {"models"}
    assert buckets("monitoring") >= {"prediction-logs"} and "scans" not in buckets("pipeline") | buckets("monitoring")
    model_reader = [s for s in roles["model-server"]["statements"] if "models" in json.dumps(s["resources"])]
    assert all("Put" not in json.dumps(s["actions"]) for s in model_reader)
    assert checked > 30


def test_every_bucket_is_encrypted_versioned_and_private():
    """Buckets are made by modules/bucket alone, which versions, encrypts, blocks public access, enforces owner
    ownership (no ACLs), denies plain HTTP and logs access; modules/buckets gives every bucket but the log bucket
    the S3 KMS key."""
    made = [(path, name) for path, kind, name, _ in blocks("resource") if kind == "aws_s3_bucket"]
    assert made == [(os.path.join("modules", "bucket", "main.tf"), "this")]
    resources = {kind: body for path, kind, name, body in blocks("resource") if path.startswith(
        os.path.join("modules", "bucket"))}
    assert unquote(resources["aws_s3_bucket_versioning"]["versioning_configuration"][0]["status"]) == "Enabled"
    access = resources["aws_s3_bucket_public_access_block"]
    assert all(access[flag] is True for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                                                  "restrict_public_buckets"))
    ownership = resources["aws_s3_bucket_ownership_controls"]["rule"][0]["object_ownership"]
    assert unquote(ownership) == "BucketOwnerEnforced"
    encryption = resources["aws_s3_bucket_server_side_encryption_configuration"]["rule"][0]
    assert "aws:kms" in encryption["apply_server_side_encryption_by_default"][0]["sse_algorithm"]
    (policy,) = [body for path, kind, name, body in blocks("data")
                 if path.startswith(os.path.join("modules", "bucket"))]
    tls = policy["statement"][0]
    assert unquote(tls["effect"]) == "Deny" and "aws:SecureTransport" in json.dumps(tls["condition"])
    modules = {name: body for path, name, body in blocks("module")
               if path.startswith(os.path.join("modules", "buckets"))}
    assert modules["bucket"]["kms_key_arn"] == "${var.kms_key_arn}"  # every platform bucket: SSE-KMS
    assert modules["access_logs"]["kms_key_arn"] is None  # S3 delivers access logs to SSE-S3 buckets only
    (stack,) = [body for path, name, body in blocks("module") if name == "buckets"]
    (stack_locals,) = parsed()[os.path.join("modules", "stack", "main.tf")]["locals"]
    assert set(stack_locals["buckets"]) == {"data", "pipeline-root", "models", "scans", "prediction-logs"}
    assert stack["kms_key_arn"] == "${local.s3_key}"


def test_the_overlays_read_only_what_terraform_outputs():
    """infra/aws/render_outputs.py turns terraform's outputs into the overlays' values: each output it reads exists
    in modules/stack, each environment exports them, and the committed values are that script's rendering of
    platform.example.json."""
    spec = importlib.util.spec_from_file_location("render_outputs", os.path.join(AWS, "render_outputs.py"))
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    assert set(render.VARIABLES.values()) <= stack_outputs(), set(render.VARIABLES.values()) - stack_outputs()
    for environment in ("dev", "prod"):
        outputs = {name: body for path, name, body in blocks("output") if path.startswith(os.path.join("envs",
                                                                                                       environment))}
        assert outputs["platform"]["value"] == "${module.radassist}"
        assert os.path.isfile(os.path.join(TERRAFORM, "envs", environment, "terraform.tfvars.example"))
    with open(os.path.join(AWS, "platform.example.json")) as handle:
        example = json.load(handle)
    assert set(example) == set(render.VARIABLES.values())
    values = render.values(example, "0.1.0")
    with open(os.path.join(AWS, "components", "outputs", "terraform-outputs.env")) as handle:
        committed = dict(line.strip().split("=", 1) for line in handle if "=" in line and not line.startswith("#"))
    assert committed == values
    for target in render.MODEL_CONFIGS.values():
        with open(target) as handle:
            text = handle.read()
        assert "s3://radassist-" not in text and f"s3://{values['BUCKET_MODELS']}/radassist" in text
    # Every overlay's replacement names a variable that exists.
    for path in glob.glob(os.path.join(AWS, "*", "kustomization.yaml")):
        with open(path) as handle:
            kustomization = yaml.safe_load(handle)
        for replacement in kustomization.get("replacements", []):
            variable = replacement["source"]["fieldPath"].removeprefix("data.")
            assert variable in values, (path, variable)


def kustomizations() -> list[str]:
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(INFRA, "**", "kustomization.yaml"),
                                                        recursive=True)
                  if "kind: Component" not in open(p).read())


@functools.cache
def kubectl_with_kustomize_5() -> str | None:
    """kubectl when its built-in kustomize is v5 or newer (components, replacements), else None."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    done = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    version = json.loads(done.stdout or "{}").get("kustomizeVersion", "v0")
    return kubectl if int(re.match(r"v?(\d+)", version).group(1)) >= 5 else None


def render(folder: str) -> list[dict]:
    kubectl = kubectl_with_kustomize_5()
    if not kubectl:
        pytest.skip("no kubectl with kustomize v5 on this machine (kubectl 1.27+ brings it): overlays not rendered")
    done = subprocess.run([kubectl, "kustomize", folder], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{folder}: {done.stderr}"
    return [document for document in yaml.safe_load_all(done.stdout) if document]


@pytest.mark.parametrize("folder", kustomizations(), ids=lambda f: os.path.relpath(f, INFRA))
def test_every_overlay_renders_and_validates_against_the_kubernetes_schemas(folder):
    import kubernetes_validate

    documents = render(folder)
    assert documents
    for document in documents:
        if document["kind"] == "PrometheusRule":  # the Prometheus Operator's CRD: not in Kubernetes' schemas
            assert document["apiVersion"].startswith("monitoring.coreos.com/")
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        assert document["metadata"].get("namespace") or document["kind"] in ("Namespace",), document["metadata"]
    if folder.startswith(AWS):
        text = yaml.safe_dump_all(documents)
        assert "set-from-terraform-outputs" not in text and "ghcr.io/radassist" not in text
        assert "terraform-outputs" not in [d["metadata"]["name"] for d in documents]  # local configuration only
        for account in (d for d in documents if d["kind"] == "ServiceAccount"):
            assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_only_the_portal_reaches_the_database_and_only_model_clients_the_model_server():
    """The aws overlays' egress rules: a default deny in the namespace; PostgreSQL and Redis only from pods the
    portal overlay labels; the portal's web pods are no model clients."""
    policies = {d["metadata"]["name"]: d for d in render(os.path.join(AWS, "network"))}
    assert policies["default-deny-egress"]["spec"] == {"podSelector": {}, "policyTypes": ["Egress"]}
    database = policies["database-clients"]["spec"]
    assert database["podSelector"]["matchLabels"] == {"radassist.io/database-client": "true"}
    assert {p["port"] for rule in database["egress"] for p in rule["ports"]} == {5432, 6379}
    assert all(5432 not in {p["port"] for p in rule.get("ports", [])} for rule in policies["dns-and-https"]["spec"]
               ["egress"])
    portal = render(os.path.join(AWS, "portal"))
    for workload in (d for d in portal if d["kind"] in ("Deployment", "Job")):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert labels["radassist.io/database-client"] == "true"
        assert (labels.get("radassist.io/model-client") == "true") == (workload["metadata"]["name"] == "portal-worker")
    for overlay in ("tf-serving", "radassist-server"):
        served = render(os.path.join(AWS, overlay))
        for workload in (d for d in served if d["kind"] == "Deployment"):
            assert "radassist.io/database-client" not in workload["spec"]["template"]["metadata"]["labels"]


def tool(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: `make env` installs it")
    return path


def checkov(*arguments: str, frameworks: set[str]) -> list[dict]:
    """Checkov's reports (one per framework) of a run over ``arguments``; it prints concatenated JSON documents.
    Checkov drops a framework's report when its worker gives no result and still exits normally (seen once on a
    fully loaded machine: kubernetes and kustomize missing): one retry, then a failure that shows Checkov's log."""
    for _ in range(2):
        done = subprocess.run([tool("checkov"), "--output", "json", "--skip-download", *arguments],
                              capture_output=True, text=True, timeout=600, cwd=ROOT,
                              env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
        decoder, text, position, reports = json.JSONDecoder(), done.stdout, 0, []
        while text[position:].strip():
            position += len(text[position:]) - len(text[position:].lstrip())
            document, position = decoder.raw_decode(text, position)
            reports.extend(document if isinstance(document, list) else [document])
        if {report["check_type"] for report in reports} >= frameworks:
            return reports
    pytest.fail(f"Checkov reported no {sorted(frameworks - {r['check_type'] for r in reports})}: "
                f"{done.stderr[-3000:]}")


@pytest.mark.slow
def test_checkov_fails_nothing_without_a_written_reason():
    reports = checkov("--framework", "terraform", "kubernetes", "kustomize", "-d", TERRAFORM, "-d", INFRA,
                      frameworks={"terraform", "kubernetes", "kustomize"})
    reports += checkov("--framework", "dockerfile", "-f", os.path.join(ROOT, "Dockerfile.portal"),
                       "-f", os.path.join(ROOT, "Dockerfile.train"), frameworks={"dockerfile"})
    frameworks = {report["check_type"] for report in reports}
    assert frameworks == {"terraform", "kubernetes", "kustomize", "dockerfile"}, frameworks
    failed = [(r["check_type"], c["check_id"], c["resource"], c["file_path"]) for r in reports
              for c in r["results"].get("failed_checks", [])]
    assert not failed, failed
    skipped = [c for r in reports for c in r["results"].get("skipped_checks", [])]
    reasons = [(c["check_id"], (c.get("check_result", {}).get("suppress_comment") or "").strip()) for c in skipped]
    assert skipped and all(len(reason) > 30 for _, reason in reasons), [r for r in reasons if len(r[1]) <= 30]
    assert sum(r["summary"]["passed"] for r in reports) > 1500


def test_hadolint_passes_both_dockerfiles_and_they_are_lean():
    dockerfiles = [os.path.join(ROOT, name) for name in ("Dockerfile.portal", "Dockerfile.train")]
    done = subprocess.run([tool("hadolint"), *dockerfiles], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in dockerfiles:
        with open(path) as handle:
            text = handle.read()
        stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
        assert len(stages) == 2 and all(re.search(r"@sha256:[0-9a-f]{64}$", image) for image in stages), stages
        assert re.search(r"^USER 10001$", text, re.MULTILINE) and "HEALTHCHECK" in text
        assert "COPY --from=build" in text
    with open(dockerfiles[0]) as handle:
        portal = handle.read()
    assert '".[portal]"' in portal and "train" not in re.findall(r'pip install "\.\[([a-z,]+)\]"', portal)[0]
    assert "COPY components" not in portal


def test_terraform_fmt():
    terraform = shutil.which("terraform")
    if not terraform:
        pytest.skip("no terraform binary on this machine: `terraform fmt -check` runs where one is present")
    done = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", TERRAFORM], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull})
    assert done.returncode == 0, done.stdout + done.stderr
