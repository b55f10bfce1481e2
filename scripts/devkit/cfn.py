"""template.yaml read for local runs, the project's one reader of it: CloudFormation's
short-form tags turned into their long form (``load``, ``template``), then intrinsics
(!Ref, !Sub, !GetAtt, !If, !Join, !Select, !Split, !FindInMap, conditions) resolved
against template parameters (defaults, then local overrides), pseudo parameters and local
stand-ins for resources (bucket names from ``devkit.s3.LOCAL_BUCKETS``, function URLs on
the runner), then the serverless functions as ``LocalFunction`` specs with SAM's Globals
merged in (``resolve_functions`` for any template, ``functions`` for the project's).

Hand-written because no maintained library resolves intrinsics outside CloudFormation
(cfn-lint only validates them); only what the runner reads is resolved, lazily, so an
unsupported construct elsewhere in the template (IAM policies, outputs) never matters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from devkit import ROOT, s3

#: The project's template (tests, benches and scripts read it through ``template()`` and
#: ``functions()``; the runner takes any template path).
TEMPLATE = ROOT / "template.yaml"


class TemplateError(Exception):
    """The template uses something the local runner cannot resolve."""


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STACK_NAME = "local"
FUNCTION_TYPES = ("AWS::Serverless::Function",)
LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")
SCHEDULE_TYPES = ("ScheduleV2", "Schedule")


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation's short-form tags (!Ref, !Sub, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise TemplateError(f"unexpected YAML node after !{suffix}")
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load(path: Path) -> dict[str, Any]:
    """The template as plain data, short-form tags turned into their long form."""
    data: dict[str, Any] = yaml.load(Path(path).read_text(), Loader=_CfnLoader)
    return data


@cache
def template() -> dict[str, Any]:
    """The project's template.yaml as plain data (read once per process)."""
    return load(TEMPLATE)


@cache
def functions() -> dict[str, LocalFunction]:
    """The project's functions by local name, resolved with the template's default
    parameters (read once per process): what tests, benches and scripts invoke."""
    return resolve_functions(template(), TEMPLATE.parent)[0]


def _env_name(logical_id: str) -> str:
    """UploadsBucket -> UPLOADS_BUCKET, the variable naming convention of the template."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", logical_id).upper()


class Resolver:
    """Resolves intrinsic functions in template fragments for one local stack."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, Any] | None = None, *,
                 base_url: str = "http://127.0.0.1:3000", function_names: dict[str, str] | None = None):
        self.template = template
        self.resources: dict[str, Any] = template.get("Resources") or {}
        self.base_url = base_url.rstrip("/")
        self.function_names = function_names or {}  # logical id -> local name
        self.parameters = self._parameters(parameters or {})
        self._conditions: dict[str, bool] = {}

    # -- parameters and references ---------------------------------------------------
    def _parameters(self, overrides: dict[str, Any]) -> dict[str, Any]:
        declared = self.template.get("Parameters") or {}
        unknown = set(overrides) - set(declared)
        if unknown:
            raise TemplateError(f"unknown template parameter(s) in overrides: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in overrides:
                value = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise TemplateError(f"template parameter {name} has no default: set it in the env file's "
                                    f"TemplateParameters")
            kind = str(spec.get("Type", "String"))
            if (kind == "CommaDelimitedList" or kind.startswith("List<")) and isinstance(value, str):
                value = [part.strip() for part in value.split(",")]
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # Ref to a Number parameter yields a string
            values[name] = value
        return values

    def pseudo(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID, "AWS::StackName": STACK_NAME,
            "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NotificationARNs": [],
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK_NAME}/local",
            "AWS::NoValue": NO_VALUE,
        }
        if name not in pseudo:
            raise TemplateError(f"unknown pseudo parameter {name}")
        return pseudo[name]

    def bucket_name(self, logical_id: str) -> str:
        props = self.resources[logical_id].get("Properties") or {}
        if "BucketName" in props:
            return str(self.resolve(props["BucketName"]))
        variable = _env_name(logical_id)
        return s3.LOCAL_BUCKETS.get(variable) or "local-" + variable.lower().replace("_", "-")

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        resource = self.resources.get(name)
        if resource is None:
            raise TemplateError(f"!Ref to unknown name {name}")
        kind = resource.get("Type")
        if kind == "AWS::S3::Bucket":
            return self.bucket_name(name)
        if kind in FUNCTION_TYPES:
            return self.function_names.get(name, name)
        if kind in LAYER_TYPES:
            layer = (resource.get("Properties") or {}).get("LayerName", name)
            return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:layer:{self.resolve(layer)}:1"
        return f"local-{name}"

    def get_att(self, logical_id: str, attribute: str) -> Any:
        resource = self.resources.get(logical_id)
        if resource is None and logical_id.endswith("Url") and logical_id[:-3] in self.resources:
            # SAM generates <Function>Url for a FunctionUrlConfig; locally it is the runner's path.
            return f"{self.base_url}/{self.function_names.get(logical_id[:-3], logical_id[:-3])}/"
        if resource is None:
            raise TemplateError(f"!GetAtt on unknown resource {logical_id}")
        kind = resource.get("Type")
        if kind == "AWS::S3::Bucket":
            name = self.bucket_name(logical_id)
            return {"Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com",
                    "RegionalDomainName": f"{name}.s3.{REGION}.amazonaws.com"}.get(
                attribute, f"local-{name}-{attribute}")
        if kind in FUNCTION_TYPES and attribute == "Arn":
            name = self.function_names.get(logical_id, logical_id)
            return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
        return f"local-{logical_id}-{attribute}"

    # -- conditions ------------------------------------------------------------------
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self._truth(conditions[name]))
        return self._conditions[name]

    def _truth(self, node: Any) -> bool:
        if isinstance(node, dict) and len(node) == 1 and "Condition" in node:
            return self.condition(node["Condition"])
        return bool(self.resolve(node))

    # -- resolution --------------------------------------------------------------------
    def resolve(self, node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, value),) = node.items()
                if key == "Ref":
                    return self.ref(self.resolve(value))
                if key.startswith("Fn::"):
                    return self._function(key[4:], value)
            resolved = {k: self.resolve(v) for k, v in node.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        if isinstance(node, list):
            return [v for v in (self.resolve(item) for item in node) if v is not NO_VALUE]
        return node

    def _function(self, name: str, arg: Any) -> Any:
        if name == "If":
            cond, when_true, when_false = arg
            return self.resolve(when_true if self.condition(cond) else when_false)
        if name == "Condition":
            return self.condition(arg)
        if name == "Equals":
            left, right = (self.resolve(v) for v in arg)
            return str(left) == str(right) if not isinstance(left, list) else left == right
        if name == "Not":
            return not self._truth(arg[0])
        if name == "And":
            return all(self._truth(v) for v in arg)
        if name == "Or":
            return any(self._truth(v) for v in arg)
        if name == "Sub":
            return self._sub(arg)
        if name == "GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else [self.resolve(v) for v in arg]
            return self.get_att(parts[0], parts[1])
        if name == "Join":
            sep, items = arg
            items = self.resolve(items)
            return str(sep).join(str(v) for v in items)
        if name == "Select":
            index, items = (self.resolve(v) for v in arg)
            return items[int(index)]
        if name == "Split":
            sep, text = (self.resolve(v) for v in arg)
            return str(text).split(str(sep))
        if name == "FindInMap":
            mapping, top, second = (self.resolve(v) for v in arg)
            return self.template["Mappings"][mapping][top][second]
        if name == "Base64":
            import base64

            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if name == "GetAZs":
            return [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
        if name == "ImportValue":
            return f"local-import-{self.resolve(arg)}"
        if name == "ToJsonString":
            import json

            return json.dumps(self.resolve(arg), separators=(",", ":"))
        if name == "Length":
            return len(self.resolve(arg))
        raise TemplateError(f"Fn::{name} is not supported by the local runner")

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return str(self.get_att(*name.split(".", 1)))
            value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]+)\}", replace, text)


@dataclass(frozen=True)
class Schedule:
    name: str  # the event's key under Events
    expression: str  # rate(...), cron(...) or at(...)
    input: Any  # the event the function receives
    timezone: str = "UTC"
    enabled: bool = True


@dataclass(frozen=True)
class LocalFunction:
    """A function of the template with everything the runner needs resolved."""

    name: str  # the folder name under functions/, used in URLs and by scripts/invoke
    logical_id: str
    code_uri: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, Any] = field(default_factory=dict)
    layers: tuple[Path, ...] = ()
    url: dict[str, Any] | None = None  # the resolved FunctionUrlConfig
    schedule_list: tuple[Schedule, ...] = ()
    reserved_concurrency: int | None = None

    @property
    def has_url(self) -> bool:
        return self.url is not None


def _layer_path(resolver: Resolver, template_dir: Path, logical_id: str) -> Path:
    props = resolver.resources[logical_id].get("Properties") or {}
    content = resolver.resolve(props.get("ContentUri"))
    if not isinstance(content, str):
        raise TemplateError(f"layer {logical_id} has no local ContentUri folder")
    root = (template_dir / content).resolve()
    metadata = resolver.resources[logical_id].get("Metadata") or {}
    # A layer built by SAM (BuildMethod) has its package at the root of ContentUri; a
    # prebuilt one carries the python/ folder that Lambda mounts as /opt/python.
    if "BuildMethod" not in metadata and (root / "python").is_dir():
        return root / "python"
    return root


def _schedule_input(raw: Any) -> Any:
    import json

    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def resolve_functions(
        template: dict[str, Any], template_dir: Path, parameters: dict[str, Any] | None = None, *,
        base_url: str = "http://127.0.0.1:3000") -> tuple[dict[str, LocalFunction], Resolver]:
    """The template's functions by local name (the CodeUri folder's name), resolved."""
    resources = template.get("Resources") or {}
    names: dict[str, str] = {}
    for logical_id, res in resources.items():
        code_uri = (res.get("Properties") or {}).get("CodeUri")
        if res.get("Type") in FUNCTION_TYPES and isinstance(code_uri, str):
            names[logical_id] = Path(code_uri).name
    duplicate = {n for n in names.values() if list(names.values()).count(n) > 1}
    if duplicate:
        raise TemplateError(f"two functions share a CodeUri folder name: {', '.join(sorted(duplicate))}")
    resolver = Resolver(template, parameters, base_url=base_url, function_names=names)
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    specs: dict[str, LocalFunction] = {}
    for logical_id, name in names.items():
        res = resources[logical_id]
        if "Condition" in res and not resolver.condition(res["Condition"]):
            continue
        props = res["Properties"]

        def prop(key: str, default: Any = None, props: dict[str, Any] = props) -> Any:
            return resolver.resolve(props[key] if key in props else globals_.get(key, default))

        env = {**(resolver.resolve((globals_.get("Environment") or {}).get("Variables")) or {}),
               **(resolver.resolve((props.get("Environment") or {}).get("Variables")) or {})}
        layers: list[Path] = []
        for item in [*(globals_.get("Layers") or []), *(props.get("Layers") or [])]:
            if isinstance(item, dict) and item.get("Ref") in resources and \
                    resources[item["Ref"]].get("Type") in LAYER_TYPES:
                layers.append(_layer_path(resolver, template_dir, item["Ref"]))
            # an external layer (an ARN) has no local content: the venv must provide it
        schedules = []
        for event_name, event in (props.get("Events") or {}).items():
            if event.get("Type") not in SCHEDULE_TYPES:
                continue
            ev = resolver.resolve(event.get("Properties") or {})
            expression = ev.get("ScheduleExpression") or ev.get("Schedule")
            enabled = str(ev.get("State", "ENABLED")).upper() != "DISABLED" and ev.get("Enabled") is not False
            schedules.append(Schedule(event_name, str(expression), _schedule_input(ev.get("Input")),
                                      str(ev.get("ScheduleExpressionTimezone") or "UTC"), enabled))
        url = resolver.resolve(props["FunctionUrlConfig"]) if "FunctionUrlConfig" in props else None
        reserved = prop("ReservedConcurrentExecutions")
        specs[name] = LocalFunction(
            name=name, logical_id=logical_id, code_uri=(template_dir / props["CodeUri"]).resolve(),
            handler=str(prop("Handler")), timeout=int(prop("Timeout", 3)),
            memory=int(prop("MemorySize", 128)), environment=env, layers=tuple(layers), url=url,
            schedule_list=tuple(schedules),
            reserved_concurrency=int(reserved) if reserved not in (None, NO_VALUE) else None,
        )
    return specs, resolver


@dataclass
class EnvFile:
    """env.local.json: the format of ``sam local --env-vars`` plus template parameters.

    {"Parameters": {VAR: value},            # every function (as in sam local)
     "<LogicalId or function name>": {...},  # one function
     "TemplateParameters": {Param: value}}   # like sam's --parameter-overrides
    """

    all_functions: dict[str, str] = field(default_factory=dict)
    per_function: dict[str, dict[str, str]] = field(default_factory=dict)
    template_parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path | None) -> EnvFile:
        import json

        if path is None or not Path(path).exists():
            return cls()
        try:
            data = json.loads(Path(path).read_text())
        except ValueError as exc:
            raise TemplateError(f"{path} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise TemplateError(f"{path}: expected an object of objects (see docs/local-dev.md)")
        return cls(
            all_functions={k: env_value(v) for k, v in data.pop("Parameters", {}).items()},
            template_parameters=data.pop("TemplateParameters", {}),
            per_function={fn: {k: env_value(v) for k, v in env.items()} for fn, env in data.items()},
        )

    def for_function(self, fn: LocalFunction) -> dict[str, str]:
        return {**self.all_functions, **self.per_function.get(fn.logical_id, {}),
                **self.per_function.get(fn.name, {})}


def env_value(value: Any) -> str:
    """A setting as an environment variable holds it (YAML's booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
