"""template.yaml: linted with SAM, cfn-lint and checkov, built with `sam build` (no container),
and its deployment properties checked on SAM's own transform of it."""

import functools
import json
import os
import re
import shutil
import subprocess
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from devkit import ROOT, cfn
from tests.unit.test_locks import LAYER, pins

TOOLS = ROOT / ".venv-tools" / "bin"
ENV = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1",
       "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def test_sam_validate_lint_is_clean():
    out = _run(str(TOOLS / "sam"), "validate", "--lint", "--region", "us-east-1")
    assert out.returncode == 0, out.stdout + out.stderr


def test_cfn_lint_is_clean():
    out = _run(str(TOOLS / "cfn-lint"), "template.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_function_handler_resolves_to_code():
    for spec in cfn.functions().values():
        module = spec.handler.rsplit(".", 1)[0].replace(".", "/")
        assert (spec.code_uri / f"{module}.py").is_file(), spec.name


def _shipped(folder: Path) -> dict[str, str]:
    """name -> version of every distribution installed in a built artefact folder."""
    found = {}
    for info in folder.glob("*.dist-info"):
        meta = Parser().parse((info / "METADATA").open(encoding="utf-8"), headersonly=True)
        found[canonicalize_name(meta["Name"])] = meta["Version"]
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)  # the build's own limit: every dependency set cross-built, 3-6 min on 2 busy cores
def test_sam_build_ships_exactly_the_locks(tmp_path):
    """Each artefact holds exactly its lock's packages at its lock's versions (issue: sam's
    python builder shipped a pydantic in functions over the layer's), for arm64."""
    build_dir = tmp_path / "build"
    out = _run(str(TOOLS / "sam"), "build", "--build-dir", str(build_dir),
               "--cache-dir", str(tmp_path / "cache"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    layer = build_dir / "CommonLayer" / "python"
    assert (layer / "common" / "db.py").is_file()
    assert (layer / "common" / "__pycache__" / "db.cpython-313.pyc").is_file()
    assert _shipped(layer) == pins(LAYER / "requirements.txt")
    for spec in cfn.functions().values():
        artefact = build_dir / spec.logical_id
        module = spec.handler.rsplit(".", 1)[0].replace(".", "/")
        assert (artefact / f"{module}.py").is_file(), spec.name
        assert _shipped(artefact) == pins(spec.code_uri / "requirements.txt"), spec.name
        # Bytecode for Lambda's python3.13 only, compiled by the build (its code folders are
        # read-only: without it every cold start compiles from source)
        compiled = artefact / Path(module).parent / "__pycache__" / f"{Path(module).name}.cpython-313.pyc"
        assert compiled.is_file(), spec.name
        assert all(p.name.endswith(".cpython-313.pyc") for p in artefact.rglob("*.pyc")), spec.name
    # arm64 (aarch64) wheels for the compiled dependencies, not the build machine's
    for package in ("pydantic_core", "psycopg_binary"):
        libs = [p.name for p in (layer / package).glob("*.so")]
        assert libs and all("aarch64" in name for name in libs), (package, libs)
    # The functions' own compiled dependencies too (face detection, photos of journal entries)
    for function, pattern in (("ProcessImageFunction", "_dlib_pybind11*.so"),
                              ("ProcessImageFunction", "numpy/_core/_multiarray_umath*.so"),
                              ("AnalyzeEntryFunction", "PIL/_imaging*.so"),
                              ("AnalyzeEntryFunction", "_pillow_heif*.so")):
        libs = [p.name for p in (build_dir / function).glob(pattern)]
        assert libs and all("aarch64" in name for name in libs), (function, pattern, libs)
    # Lambda refuses a function whose code and layers unzip to more than 250 MB
    layer_bytes = _tree_bytes(build_dir / "CommonLayer")
    for function in (p for p in build_dir.iterdir() if p.is_dir() and p.name != "CommonLayer"):
        total = layer_bytes + _tree_bytes(function)
        assert total < LAMBDA_UNZIPPED_LIMIT * 0.9, (function.name, total)
    shutil.rmtree(build_dir, ignore_errors=True)


#: Lambda's limit on a function's code and layers, unzipped (bytes).
LAMBDA_UNZIPPED_LIMIT = 262_144_000


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_checkov_is_clean():
    """checkov (pinned in the tools venv) passes; what it skips is justified in .checkov.yaml
    and in the one resource's Metadata."""
    out = _run(str(TOOLS / "checkov"), "--config-file", ".checkov.yaml")
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]


# --- the template as CloudFormation sees it: SAM's transform, for a given stack name ------

_TRANSFORM = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:  # the transform asks IAM for managed policy ARNs by name; we name none
    def load(self):
        return {}

template = yaml_parse(open("template.yaml").read())
for resource in template["Resources"].values():  # as `sam build` rewrites them after uploading
    for prop in ("CodeUri", "ContentUri"):
        if prop in resource.get("Properties", {}):
            resource["Properties"][prop] = "s3://bucket/key"
print(json.dumps(transform(template, {"AWS::StackName": sys.argv[1], "AWS::Region": "us-east-1"},
                           NoManagedPolicies())))
"""


@functools.cache
def transformed(stack: str = "backend-prod") -> dict[str, Any]:
    """template.yaml through SAM's own transform (samtranslator, as `sam deploy` runs it)."""
    out = _run(str(TOOLS / "python"), "-c", _TRANSFORM, stack)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


#: The property that names a resource in its account and region, per type. Names that
#: live inside another resource (an alias inside its function) are not listed.
NAME_PROPERTY = {
    "AWS::Lambda::Function": "FunctionName", "AWS::Lambda::LayerVersion": "LayerName",
    "AWS::Scheduler::Schedule": "Name", "AWS::Scheduler::ScheduleGroup": "Name",
    "AWS::IAM::Role": "RoleName", "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::S3::Bucket": "BucketName", "AWS::SNS::Topic": "TopicName", "AWS::SQS::Queue": "QueueName",
    "AWS::Logs::LogGroup": "LogGroupName", "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::CloudWatch::Dashboard": "DashboardName",
}
#: Types with no name of their own in the account (or only one inside their parent).
UNNAMED = {
    "AWS::Lambda::Permission", "AWS::Lambda::Url", "AWS::Lambda::Alias", "AWS::Lambda::Version",
    "AWS::Lambda::EventInvokeConfig", "AWS::S3::BucketPolicy", "AWS::SNS::Subscription",
}


def _resolve(node: Any, stack: str, parameters: dict[str, Any]) -> str:
    """A name as CloudFormation would make it for ``stack``, parameters at their defaults."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and set(node) == {"Ref"}:
        return str(parameters[node["Ref"]]["Default"])
    if isinstance(node, dict) and set(node) == {"Fn::Sub"}:
        text, names = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
        def value(match):
            name = match.group(1)
            if name == "AWS::StackName":
                return stack
            if name in names:
                return _resolve(names[name], stack, parameters)
            return str(parameters[name]["Default"])
        return re.sub(r"\$\{([^}!]+)\}", value, text)
    raise AssertionError(f"cannot resolve the name {node!r}")


def _physical_names(stack: str) -> dict[str, str]:
    template = transformed(stack)
    names = {}
    for logical_id, resource in template["Resources"].items():
        kind = resource["Type"]
        assert kind in NAME_PROPERTY or kind in UNNAMED, f"{logical_id}: is {kind} named? add it to the test"
        prop = NAME_PROPERTY.get(kind)
        if prop and prop in resource.get("Properties", {}):
            names[logical_id] = _resolve(resource["Properties"][prop], stack, template["Parameters"])
    return names


def test_two_stacks_in_one_account_share_no_physical_name():
    # Given the template transformed for a dev and a prod stack (same parameters: even the
    # same Stage), when their named resources are listed
    dev, prod = _physical_names("backend-dev"), _physical_names("backend-prod")
    # Then no name is in both (CloudFormation generates the rest, unique per stack)
    assert dev and prod
    assert set(dev.values()).isdisjoint(prod.values()), set(dev.values()) & set(prod.values())
    # The schedules, which SAM named after their logical ids, are among the named ones
    assert {n for n in prod.values() if n.startswith("backend-prod-")} >= {
        "backend-prod-cache-cleanup", "backend-prod-backup-export", "backend-prod-account-exports"}


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Lambda::Function"}


def _role_statements(template: dict[str, Any], function: dict[str, Any]) -> list[dict[str, Any]]:
    role = template["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
    return [st for policy in role.get("Policies", []) for st in policy["PolicyDocument"]["Statement"]]


def _secret_of(arn: Any) -> str:
    return arn["Fn::Sub"].rsplit("${SecretsPath}/", 1)[1]


#: The secrets each function reads (besides DATABASE_URL, which all read), from its code.
SECRETS = {
    "account": {"JWT_SECRET"},
    "analyze-entry": {"JWT_SECRET", "OPENAI_API_KEY"},
    "process-image": {"JWT_SECRET", "OPENAI_API_KEY"},
    "checkout": {"JWT_SECRET", "PAYMOB_SECRET_KEY", "STRIPE_API_KEY", "REVENUECAT_API_KEY"},
    "paymob-webhook": {"PAYMOB_HMAC_SECRET"},
    "stripe-webhook": {"STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY"},
    "revenuecat-webhook": {"REVENUECAT_WEBHOOK_AUTH", "REVENUECAT_API_KEY"},
    "cache-cleanup": set(),
    "backup-export": set(),
    "reconcile": {"STRIPE_API_KEY", "PAYMOB_API_KEY", "REVENUECAT_API_KEY"},
}


def test_each_function_can_read_only_its_own_secrets():
    template = transformed()
    seen = set()
    for logical_id, function in _functions(template).items():
        props = function["Properties"]
        service = props["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
        # What its role may read from SSM: exactly the parameters its variables name
        ssm = [st for st in _role_statements(template, function) if "ssm" in str(st["Action"])]
        assert [st["Action"] for st in ssm] == ["ssm:GetParameter"], logical_id
        readable = {_secret_of(arn) for arn in ssm[0]["Resource"]}
        variables = {name.removesuffix("_PARAM") for name in props["Environment"]["Variables"]
                     if name.endswith("_PARAM")}
        assert readable == variables == {"DATABASE_URL"} | SECRETS[service], logical_id
        seen.add(service)
    assert seen == set(SECRETS)  # a new function: say which secrets it reads
    # e.g. the journal cannot read the payment provider's key
    analyze = _functions(template)["AnalyzeEntryFunction"]
    assert "STRIPE_API_KEY" not in str(_role_statements(template, analyze))


def test_kms_and_vpc_grants_only_when_configured():
    template = transformed()
    resources = template["Resources"]
    conditions = template["Conditions"]
    assert resources["SecretsDecryptPolicy"]["Condition"] == "HasSecretsKey"
    assert conditions["HasSecretsKey"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SecretsKmsKeyArn"}, ""]}]}
    decrypt = resources["SecretsDecryptPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [st["Action"] for st in decrypt] == ["kms:Decrypt"]
    assert resources["OutsideVpcBoundary"]["Condition"] == "OutsideVpc"
    assert conditions["OutsideVpc"] == {"Fn::Equals": [{"Fn::Join": ["", {"Ref": "SubnetIds"}]}, ""]}
    denied = {a for st in resources["OutsideVpcBoundary"]["Properties"]["PolicyDocument"]["Statement"]
              if st["Effect"] == "Deny" for a in st["Action"]}
    # What AWSLambdaVPCAccessExecutionRole grants (its ec2 actions), which SAM attaches to
    # every role whose function has a VpcConfig, even one that resolves to nothing
    assert denied >= {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
                      "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
                      "ec2:UnassignPrivateIpAddresses"}
    for logical_id, function in _functions(template).items():
        role = resources[function["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
        assert role["PermissionsBoundary"] == {
            "Fn::If": ["OutsideVpc", {"Ref": "OutsideVpcBoundary"}, {"Ref": "AWS::NoValue"}]}, logical_id
        assert {"Fn::If": ["HasSecretsKey", {"Ref": "SecretsDecryptPolicy"}, {"Ref": "AWS::NoValue"}]} in \
            role["ManagedPolicyArns"], logical_id


def test_no_s3_action_a_function_never_uses():
    template = transformed()
    unused = {"s3:PutObjectAcl", "s3:PutLifecycleConfiguration", "s3:GetLifecycleConfiguration",
              "s3:GetBucketLocation", "s3:GetObjectVersion", "s3:*"}
    for logical_id, function in _functions(template).items():
        actions = {a for st in _role_statements(template, function)
                   for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
        assert not actions & unused, (logical_id, actions & unused)


def test_every_function_has_its_log_group_alarms_and_alias():
    template = transformed()
    resources = template["Resources"]
    for logical_id, function in _functions(template).items():
        props = function["Properties"]
        prefix = logical_id.removesuffix("Function")
        # JSON logs into its own log group, kept LogRetentionDays
        assert props["LoggingConfig"] == {"LogFormat": "JSON", "LogGroup": {"Ref": f"{prefix}LogGroup"}}
        retention = resources[f"{prefix}LogGroup"]["Properties"]
        assert retention == {"RetentionInDays": {"Ref": "LogRetentionDays"}}
        # errors, throttles, and p99 duration at 80% of its timeout, each notifying the topic
        mine = [{"Name": "FunctionName", "Value": {"Ref": logical_id}}]
        alarms = {a["Properties"]["MetricName"]: a["Properties"] for a in resources.values()
                  if a["Type"] == "AWS::CloudWatch::Alarm" and a["Properties"].get("Dimensions") == mine}
        assert {"Errors", "Throttles", "Duration"} <= set(alarms), logical_id
        assert alarms["Duration"]["ExtendedStatistic"] == "p99"
        assert alarms["Duration"]["Threshold"] == props["Timeout"] * 1000 * 0.8, logical_id
        # published as a version behind the alias `live`, which its URL serves
        assert f"{logical_id}Aliaslive" in resources
        if f"{logical_id}Url" in resources:
            assert resources[f"{logical_id}Url"]["Properties"]["TargetFunctionArn"] == {
                "Ref": f"{logical_id}Aliaslive"}
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            assert resource["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], logical_id


def _emitted_metric_names() -> set[str]:
    """Metric names the code emits: literal names given to add_metric or the counting helpers."""
    names = set()
    for path in [*(ROOT / "layers").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]:
        names |= set(re.findall(r'"([A-Z][A-Za-z]+)"', path.read_text()))
    return names


def test_alarms_and_dashboard_use_metrics_the_code_emits():
    template = transformed()
    resources = template["Resources"]
    namespace = {"Fn::Sub": "Backend/${AWS::StackName}"}
    custom = set()
    for alarm in (r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"):
        # a plain alarm, or one on metric math over several metrics (reconcile's heals)
        metrics = [alarm] + [m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
        custom |= {m["MetricName"] for m in metrics if m.get("Namespace") == namespace}
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    dashboard = json.loads(body.replace("${AWS::Region}", "us-east-1"))
    for widget in dashboard["widgets"]:
        for metric in widget["properties"]["metrics"]:
            if metric[0] == "${Ns}":
                custom.add(metric[1])
    assert {"GenerationsCreated", "CreditsCharged", "CacheHit", "CacheMiss", "WebhookApplied"} <= custom
    assert "WebhooksHealed" in custom
    missing = custom - _emitted_metric_names()
    assert not missing, missing
    # one namespace per stack: dev's metrics never satisfy prod's alarms
    variables = next(iter(_functions(template).values()))["Properties"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == namespace


def test_data_buckets_are_retained_and_uploads_expire_by_tag():
    resources = transformed()["Resources"]
    for bucket in ("UploadsBucket", "GenerationsBucket", "BackupsBucket", "ExportsBucket"):
        assert resources[bucket]["DeletionPolicy"] == resources[bucket]["UpdateReplacePolicy"] == "Retain"
    rules = {r["Id"]: r for r in resources["UploadsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    expire = rules["expire-uploads"]
    # only objects tagged by process-image's upload forms (journal attachments are kept)
    assert expire["TagFilters"] == [{"Key": "expire", "Value": "uploads"}] and "Prefix" not in expire
    assert expire["ExpirationInDays"] == {"Ref": "UploadsExpireAfterDays"}
    uploads = (ROOT / "functions/process-image/process_image/uploads.py").read_text()
    assert 'EXPIRY_TAGS = {"expire": "uploads"}' in uploads
    # generations have no expiry: a cache entry may point at one for its whole TTL
    generations = resources["GenerationsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert all("ExpirationInDays" not in rule for rule in generations)
