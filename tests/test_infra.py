"""Deployment files stay consistent with the code: manifests parse, kustomizations list files that exist, every
configuration variable they set is one the code reads, and the commands they run are real CLI commands."""

import glob
import os
import re

import pytest
import yaml
from conftest import REPO_ROOT

from radassist import cli

INFRA = os.path.join(REPO_ROOT, "infra")


def _documents(path: str) -> list[dict]:
    with open(path) as handle:
        return [d for d in yaml.safe_load_all(handle) if d]


def _manifests() -> list[str]:
    return sorted(glob.glob(os.path.join(INFRA, "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: os.path.relpath(p, INFRA))
def test_manifests_parse_and_kustomizations_point_at_real_files(path):
    documents = _documents(path)
    assert documents and all("apiVersion" in d and "kind" in d for d in documents)
    for document in documents:
        if document["kind"] == "Kustomization":
            for resource in document.get("resources", []):
                assert os.path.exists(os.path.join(os.path.dirname(path), resource)), resource


def _source_text() -> str:
    text = ""
    for folder in ("portal", "radassist", "serving", "pipelines", "components"):
        for path in glob.glob(os.path.join(REPO_ROOT, folder, "**", "*.py"), recursive=True):
            with open(path) as handle:
                text += handle.read()
    return text


def test_every_configuration_variable_set_in_infra_is_read_by_the_code():
    source = _source_text()
    configured = set()
    for path in _manifests():
        for document in _documents(path):
            if document["kind"] == "ConfigMap":
                configured |= set(document["data"])
    assert configured, "no ConfigMap found"
    unknown = sorted(name for name in configured if f'"{name}"' not in source)
    assert not unknown, f"set in infra/ but read nowhere: {unknown}"


def _containers():
    for path in _manifests():
        for document in _documents(path):
            template = document.get("spec", {}).get("template", {}).get("spec", {})
            for container in template.get("containers", []):
                yield os.path.relpath(path, INFRA), container


def test_radassist_commands_in_manifests_and_dockerfiles_parse():
    parser = cli.make_parser()
    commands = [c["command"][1:] + c.get("args", []) for _, c in _containers()
                if c.get("command", [""])[0] == "radassist"]
    with open(os.path.join(REPO_ROOT, "Dockerfile.portal")) as handle:
        cmd = re.search(r"^CMD (\[.*\])", handle.read(), re.MULTILINE).group(1)
    commands.append(yaml.safe_load(cmd)[1:])
    assert len(commands) >= 4
    for command in commands:
        parser.parse_args(command)  # exits (fails the test) on an unknown command or flag


def test_only_the_report_workers_may_reach_the_model_server():
    """The model server's NetworkPolicy admits pods labelled as model clients; the workers carry the label, the
    portal's web pods (which face the internet) do not."""
    (policy,) = _documents(os.path.join(INFRA, "serving", "base", "networkpolicy.yaml"))
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["podSelector"]["matchLabels"] == {"app": "model-server"}
    client_label = {"radassist.io/model-client": "true"}
    sources = [source for rule in policy["spec"]["ingress"] for source in rule["from"]]
    assert all(source.get("podSelector", {}).get("matchLabels") == client_label or
               set(source) == {"namespaceSelector"} for source in sources)
    labels = {document["metadata"]["name"]: document["spec"]["template"]["metadata"]["labels"]
              for path in ("worker.yaml", "web.yaml") for document in _documents(os.path.join(INFRA, "portal", path))
              if document["kind"] == "Deployment"}
    assert labels["portal-worker"].items() >= client_label.items()
    assert not any(key in client_label for key in labels["portal-web"])
    for name in ("networkpolicy.yaml",):
        assert name in _documents(os.path.join(INFRA, "serving", "base", "kustomization.yaml"))[0]["resources"]


def test_both_model_servers_serve_both_models_from_one_tf_serving_config():
    """TF Serving and our server read the same model config file (base/models.config): the classifier and the
    segmenter, each from its folder of the models bucket."""
    from radassist.contract import MODEL_NAME, SEGMENTATION_MODEL_NAME
    from serving.model_config import read_model_config

    models = read_model_config(os.path.join(INFRA, "serving", "base", "models.config"))
    assert [(m.name, m.folder) for m in models] == [(MODEL_NAME, MODEL_NAME),
                                                   (SEGMENTATION_MODEL_NAME, SEGMENTATION_MODEL_NAME)]
    for overlay, flag in (("tf-serving", "--model_config_file="), ("radassist-server", "--model-config-file=")):
        (deployment,) = _documents(os.path.join(INFRA, "serving", overlay, "deployment.yaml"))
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (path,) = [arg.split("=", 1)[1].split()[0] for arg in container["args"] if arg.startswith(flag)]
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
        assert path == os.path.join(mounts["model-config"], "models.config")
        assert volumes["model-config"]["configMap"]["name"] == "model-config"


def test_our_server_logs_the_classifiers_calls_for_monitoring():
    """The radassist-server overlay replaces the model config with base's plus a logging_config (TF Serving's own
    field) for the classifier, so `radassist monitor` has traffic to read; the TF Serving overlay keeps base's."""
    from serving.model_config import read_model_config

    base = read_model_config(os.path.join(INFRA, "serving", "base", "models.config"))
    ours = read_model_config(os.path.join(INFRA, "serving", "radassist-server", "models.config"))
    assert [(m.name, m.base_path) for m in ours] == [(m.name, m.base_path) for m in base]
    assert ours[0].logging.filename_prefix.startswith("s3://") and ours[0].logging.sampling_rate > 0
    (kustomization,) = _documents(os.path.join(INFRA, "serving", "radassist-server", "kustomization.yaml"))
    (generator,) = kustomization["configMapGenerator"]
    assert generator == {"name": "model-config", "behavior": "replace", "files": ["models.config"]}


def test_the_alert_rules_read_the_metrics_the_monitor_pushes():
    with open(os.path.join(REPO_ROOT, "components", "monitoring", "publish.py")) as handle:
        pushed = set(re.findall(r'Gauge\("(radassist_\w+)"', handle.read()))
    (rules,) = _documents(os.path.join(INFRA, "monitoring", "prometheus-rules.yaml"))
    expressions = [rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"]]
    used = {name for expression in expressions for name in re.findall(r"radassist_\w+", expression)}
    assert used and used <= pushed, used - pushed
    assert "radassist_drift_alert" in used and "radassist_monitoring_last_run_timestamp_seconds" in used
