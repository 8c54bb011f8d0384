"""Turns terraform's outputs into the values the AWS overlays read (no Kubernetes or AWS calls; stdlib only).

    terraform -chdir=terraform/envs/prod output -json platform > platform.json
    python3 infra/aws/render_outputs.py platform.json --tag 0.1.0

writes components/outputs/terraform-outputs.env (image repositories, buckets, IRSA role ARNs, the region, the VPC's
range; never a password: the database's and Redis's secrets stay in Secrets Manager, docs/deploy-aws.md) and the
model config files of the two model-server overlays (infra/serving's, with the bucket names put in).
"""

import argparse
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
SERVING = os.path.join(HERE, "..", "serving")
# The overlays' variable -> terraform's output (terraform/modules/stack/outputs.tf).
VARIABLES = {
    "IMAGE_TRAIN": "image_train", "IMAGE_PORTAL": "image_portal",
    "BUCKET_DATA": "bucket_data", "BUCKET_PIPELINE_ROOT": "bucket_pipeline_root", "BUCKET_MODELS": "bucket_models",
    "BUCKET_SCANS": "bucket_scans", "BUCKET_PREDICTION_LOGS": "bucket_prediction_logs",
    "ROLE_PORTAL": "role_portal", "ROLE_MODEL_SERVER": "role_model_server",
    "ROLE_MODEL_SERVER_LOGGING": "role_model_server_logging", "ROLE_PIPELINE": "role_pipeline",
    "ROLE_MONITORING": "role_monitoring", "AWS_REGION": "region", "VPC_CIDR": "vpc_cidr",
}
# infra/serving's model configs name these buckets; the overlays' copies name the environment's.
PLACEHOLDER_BUCKETS = {"s3://radassist-models": "BUCKET_MODELS",
                       "s3://radassist-prediction-logs": "BUCKET_PREDICTION_LOGS"}
MODEL_CONFIGS = {  # source (infra/serving) -> the component that carries it
    os.path.join(SERVING, "base", "models.config"): os.path.join(HERE, "components", "model-config", "models.config"),
    os.path.join(SERVING, "radassist-server", "models.config"):
        os.path.join(HERE, "components", "model-config-logging", "models.config"),
}


def values(outputs: dict, tag: str) -> dict[str, str]:
    """The overlays' variables from `terraform output -json platform` (each output's "value", or the bare value)."""
    found = {}
    for variable, output in VARIABLES.items():
        if output not in outputs:
            raise SystemExit(f"terraform's outputs lack {output!r}: is this `terraform output -json platform`?")
        value = outputs[output]
        found[variable] = str(value["value"] if isinstance(value, dict) and "value" in value else value)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise SystemExit(f"{tag!r} is not an image tag")
    found["IMAGE_TAG"] = tag
    return found


def render(found: dict[str, str]) -> None:
    with open(os.path.join(HERE, "components", "outputs", "terraform-outputs.env"), "w") as handle:
        handle.write("# Written by infra/aws/render_outputs.py from `terraform output -json platform`.\n")
        handle.writelines(f"{name}={value}\n" for name, value in sorted(found.items()))
    for source, target in MODEL_CONFIGS.items():
        with open(source) as handle:
            text = handle.read()
        for placeholder, variable in PLACEHOLDER_BUCKETS.items():
            text = text.replace(placeholder, f"s3://{found[variable]}")
        with open(target, "w") as handle:
            handle.write(f"# Written by infra/aws/render_outputs.py from {os.path.relpath(source, HERE)}.\n{text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", help="the JSON of `terraform output -json platform`")
    parser.add_argument("--tag", required=True, help="the release's image tag (the images pushed to ECR)")
    args = parser.parse_args()
    with open(args.outputs) as handle:
        render(values(json.load(handle), args.tag))
    print(f"wrote {os.path.join(HERE, 'components')}")


if __name__ == "__main__":
    main()
