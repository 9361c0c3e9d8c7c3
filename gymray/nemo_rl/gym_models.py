"""The fields each NeMo Gym agent's rows must carry, read statically from a Gym checkout.

During GRPO every row is posted to the Gym agent its ``agent_ref.name`` names. The agent
validates it with the pydantic model annotating ``body`` in ``run``, and its resources
server with those of ``seed_session`` and ``verify``: a row missing a required field
fails with HTTP 422 in the middle of training. Gym cannot be imported to ask (each
server has its own heavy dependencies), so the models are read with ``ast``: agent ->
config (``config_paths`` and ``_inherit_from`` merged as NeMo Gym's global_config.py
does) -> agent type and resources server -> their app.py -> the ``body`` models, with
fields collected over base classes found in the Gym tree.
"""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Iterable
from pathlib import Path

import yaml

AGENTS, SERVERS = "responses_api_agents", "resources_servers"
# Where a checkout declares instances, in the order gymray prefers a declaring config.
CONFIG_GLOBS = (
    "resources_servers/*/configs/*.yaml",
    "responses_api_agents/*/configs/*.yaml",
    "environments/*/config*.yaml",
    "benchmarks/*/*.yaml",
)
# (role, endpoint, the field Gym adds itself), verify first: it names the task's fields.
ENDPOINTS = (("server", "verify", "response"), ("server", "seed_session", ""), ("agent", "run", ""))
INHERIT_KEYS = ("_inherit_from", "_copy")
LOADER = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)  # libyaml if built: hundreds of configs are read


def _merge(a, b):
    """OmegaConf.merge on plain data: mappings merge key by key, anything else replaces."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {**a, **{k: _merge(a[k], v) if k in a else v for k, v in b.items()}}
    return b


def _name(node) -> str | None:
    """The name a Name, attribute, call or subscript ends in (``Field(...)`` -> Field)."""
    node = node.func if isinstance(node, ast.Call) else node
    node = node.value if isinstance(node, ast.Subscript) else node
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)


def _kw(node, key: str):
    keywords = node.keywords if isinstance(node, ast.Call) else []
    return next((k.value for k in keywords if k.arg == key), None)


def _field(stmt: ast.AnnAssign) -> tuple[str, bool]:
    """(input key, required) of an annotated attribute as pydantic 2 reads it: required
    when it has no default, ``Optional[...]`` included."""
    ann, key, required = stmt.annotation, stmt.target.id, stmt.value is None
    calls = [stmt.value] if isinstance(stmt.value, ast.Call) else []
    if _name(ann) == "Annotated" and isinstance(getattr(ann, "slice", None), ast.Tuple):
        calls += ann.slice.elts[1:]
    for call in (c for c in calls if isinstance(c, ast.Call) and _name(c) == "Field"):
        default = call.args[0] if call.args else _kw(call, "default")
        has_default = default is not None and getattr(default, "value", None) is not Ellipsis
        has_default |= _kw(call, "default_factory") is not None
        if call is stmt.value or has_default:  # Field(...) itself is no default
            required = not has_default
        for alias in (_kw(call, "validation_alias"), _kw(call, "alias")):
            if _name(alias) == "AliasChoices":  # any choice will do; the first is reported
                alias = alias.args[0] if alias.args else None
            if isinstance(alias, ast.Constant) and isinstance(alias.value, str):
                key = alias.value
                break
    return key, required


def _before_validators(fn) -> list[str]:
    """Model validators that see the raw row first, and so may fill in or rename fields."""
    validators = [d for d in fn.decorator_list if _name(d) == "model_validator"]
    modes = [getattr(_kw(d, "mode"), "value", None) for d in validators]
    return [f"{fn.name} (model_validator mode={m})" for m in modes if m in ("before", "wrap")]


class _Module:
    """One Gym source file: its classes, names bound to other names, imports, and the
    classes its ``__main__`` block serves (``X.run_webserver()``)."""

    def __init__(self, name: str, path: Path):
        self.name, self.classes, self.aliases, self.imports, self.served = name, {}, {}, {}, []
        package = name.split(".")[: None if path.name == "__init__.py" else -1]
        self._walk(ast.parse(path.read_text(encoding="utf-8")).body, package)

    def _walk(self, body: list, package: list[str]) -> None:
        for s in body:
            if isinstance(s, ast.ClassDef):
                self.classes[s.name] = s
            elif isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name):
                self.aliases[s.targets[0].id] = s.value
            elif isinstance(s, ast.ImportFrom):
                base = package[: len(package) - s.level + 1] if s.level else []
                module = ".".join(base + ([s.module] if s.module else []))
                self.imports.update({a.asname or a.name: (module, a.name) for a in s.names})
            elif isinstance(s, ast.Import):
                self.imports.update({a.asname: (a.name, None) for a in s.names if a.asname})
            elif isinstance(s, ast.If) and "__name__" in ast.unparse(s.test):
                for call in (n for n in ast.walk(s) if _name(n) == "run_webserver"):
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
                        self.served.append(call.func.value)
            elif isinstance(s, (ast.If, ast.Try)):
                for block in (s.body, s.orelse, *(h.body for h in getattr(s, "handlers", []))):
                    self._walk(block, package)


class _Gym:
    """A Gym checkout read without importing it: configs as NeMo Gym merges them, and
    classes looked up through the tree's modules (names from elsewhere, such as
    pydantic's ``BaseModel``, stay plain strings)."""

    def __init__(self, root: Path):
        self.root, self._yaml, self._merged, self._modules, self._models = root, {}, {}, {}, {}

    def load(self, rel: str) -> dict | None:
        if rel not in self._yaml:
            try:
                data = yaml.load((self.root / rel).read_text(encoding="utf-8"), Loader=LOADER)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                data = None
            self._yaml[rel] = data if isinstance(data, dict) else None
        return self._yaml[rel]

    def index(self) -> dict[str, list[str]]:
        """Top-level instance name -> the checkout's configs declaring it."""
        found: dict[str, list[str]] = {}
        for path in (p for pattern in CONFIG_GLOBS for p in sorted(self.root.glob(pattern))):
            rel = str(path.relative_to(self.root))
            for name, value in (self.load(rel) or {}).items():
                found.setdefault(str(name), []).extend([rel] if isinstance(value, dict) else [])
        return found

    def merged(self, entries: list[str]) -> tuple[dict, list[str]]:
        """(config, missing entries) Gym builds from ``config_paths: entries``: each config
        merges after those it pulls in, and a later sibling over an earlier one."""
        if tuple(entries) in self._merged:
            return self._merged[tuple(entries)]
        paths, children, configs, missing = list(entries), [[] for _ in entries], [], []
        for i, entry in enumerate(paths):  # grows while pulled-in configs are appended
            cfg = self.load(entry)
            missing += [] if cfg is not None else [entry]
            chained = (cfg or {}).get("config_paths")
            for new in map(str, chained if isinstance(chained, list) else []):
                if new not in paths:
                    children[i].append(len(paths))
                    paths.append(new)
                    children.append([])
            configs.append(cfg or {})

        def after_pulled_in(i: int) -> list[int]:
            return [j for c in children[i] for j in after_pulled_in(c)] + [i]

        out = {}
        for i in (j for root in range(len(entries)) for j in after_pulled_in(root)):
            out = _merge(out, configs[i])
        self._merged[tuple(entries)] = out, missing
        return out, missing

    def instance(self, cfg: dict, name: str, depth: int = 0):
        """A top-level instance with ``_inherit_from``/``_copy``/``${inherit_from:..}`` applied."""
        node = cfg
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if depth > 10:
            return None
        if isinstance(node, str) and node.startswith(("${inherit_from:", "${copy:")):
            return self.instance(cfg, node.split(":", 1)[1].rstrip("}"), depth + 1)
        if isinstance(node, dict) and any(k in node for k in INHERIT_KEYS):
            source = str(node.get(INHERIT_KEYS[0], node.get(INHERIT_KEYS[1])))
            base = self.instance(cfg, source, depth + 1)
            rest = {k: v for k, v in node.items() if k not in INHERIT_KEYS}
            return None if base is None else _merge(base, rest)
        return node

    def apps(self, cfg: dict, agent: str, index: dict) -> list[tuple[str, str, str]] | str:
        """[(role, type, app file)] serving ``agent`` in ``cfg``, the agent first; else why
        not. A resources server missing from ``cfg`` is taken from any config in ``index``
        declaring it (one the run would list beside the agent's)."""
        found, name = [], agent
        for role, kind in (("agent", AGENTS), ("server", SERVERS)):
            inst = self.instance(cfg, name)
            for rel in index.get(name, []) if inst is None and role == "server" else ():
                inst = inst or self.instance(self.merged([rel])[0], name)
            inner = inst.get(kind) if isinstance(inst, dict) else None
            if not isinstance(inner, dict) or len(inner) != 1:
                return f"'{name}' is not declared as a {kind} instance"
            ((type_, config),) = inner.items()
            config = config if isinstance(config, dict) else {}
            app = posixpath.normpath(f"{kind}/{type_}/{config.get('entrypoint') or 'app.py'}")
            found.append((role, type_, app))
            ref = config.get("resources_server")
            name = str(ref.get("name") or "") if isinstance(ref, dict) else ""
            if role == "agent" and (not name or name == "???" or "${" in name):
                return found  # no server, or one named at launch: only the agent's model
        return found

    def module(self, name: str) -> _Module | None:
        if name not in self._modules:
            base, self._modules[name] = self.root.joinpath(*name.split(".")), None
            for path in (base.with_suffix(".py"), base / "__init__.py") if name else ():
                try:
                    self._modules[name] = _Module(name, path)
                    break
                except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                    pass  # absent (try the package) or unparsable
        return self._modules[name]

    def lookup(self, mod: _Module, node, depth: int = 0) -> tuple[_Module, ast.ClassDef] | str:
        """The in-tree class an expression names, else the name it ends in."""
        node = node.value if isinstance(node, ast.Subscript) else node  # Generic[T]
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in mod.imports:
            module, attr = mod.imports[node.value.id]  # module.Class
            sub = self.module(module if attr is None else f"{module}.{attr}")
            return self.lookup_name(sub, node.attr, depth + 1) if sub else node.attr
        if isinstance(node, ast.Name):
            return self.lookup_name(mod, node.id, depth)
        return _name(node) or "?"

    def lookup_name(self, mod: _Module, name: str, depth: int):
        if name in mod.classes:
            return mod, mod.classes[name]
        if depth < 20 and name in mod.aliases:
            return self.lookup(mod, mod.aliases[name], depth + 1)
        module, attr = mod.imports.get(name, (None, None))
        sub = self.module(module) if attr and depth < 20 else None
        return self.lookup_name(sub, attr, depth + 1) if sub else attr or name

    def method(self, mod: _Module, cls: ast.ClassDef, name: str, depth: int = 0):
        """(module, def) of ``cls.name``, inherited from in-tree bases if need be."""
        for s in cls.body:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == name:
                return mod, s
        for base in cls.bases if depth < 15 else ():
            found = self.lookup(mod, base)
            if isinstance(found, tuple) and (m := self.method(*found, name, depth + 1)):
                return m
        return None

    def model(self, mod: _Module, cls: ast.ClassDef) -> tuple[dict, list[str]]:
        """({field: (input key, required)}, before validators) over in-tree bases; the
        left-most base wins, as in the MRO."""
        key = (mod.name, cls.name)
        if key not in self._models:
            self._models[key] = ({}, [])  # a cycle reads as empty
            fields, before = {}, []
            for found in (self.lookup(mod, b) for b in reversed(cls.bases)):
                if isinstance(found, tuple):
                    base_fields, base_before = self.model(*found)
                    fields.update(base_fields)
                    before += [v for v in base_before if v not in before]
            for s in cls.body:
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name):
                    name, ann = s.target.id, _name(s.annotation)
                    if name != "model_config" and name[0] != "_" and ann != "ClassVar":
                        fields[name] = _field(s)
                elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    before += [f"{cls.name}.{v}" for v in _before_validators(s)]
            self._models[key] = (fields, before)
        return self._models[key]

    def body_model(self, app: str, role: str, endpoint: str):
        """(module, class) of ``body`` in ``endpoint`` of the class ``app`` serves; None when
        the endpoint takes no ``body``; a string saying why it cannot be read."""
        mod = self.module(".".join(Path(app).with_suffix("").parts))
        if mod is None:
            return f"{app} is missing or unparsable"
        main = "run" if role == "agent" else "verify"  # spots the class when none is served
        served = [c for c in (self.lookup(mod, n) for n in mod.served) if isinstance(c, tuple)]
        served = served or [
            (mod, c) for c in reversed(mod.classes.values()) if self.method(mod, c, main)
        ]
        if not served:
            return f"no server class in {app}"
        found = self.method(*served[0], endpoint)
        arg = next((a for a in found[1].args.args if a.arg == "body"), None) if found else None
        if arg is None or arg.annotation is None:
            return None
        model = self.lookup(found[0], arg.annotation)
        return model if isinstance(model, tuple) else f"{app}: body: {model} is not in the tree"


def required_fields(
    gym_root: Path, agents: Iterable[str], config_paths: list[str] | None = None
) -> dict[str, dict]:
    """For each agent instance name: {"model": "<server>.verify: XVerifyRequest" (plus the
    other models that add required fields) or None, "required": sorted top-level fields a
    row must carry (``response`` excepted: Gym adds it), "unchecked": why the fields cannot
    be known statically, or None}. With ``config_paths``, agents resolve only through those
    configs (as the run will start them); else through the checkout's own configs."""
    gym = _Gym(Path(gym_root))
    index = gym.index() if config_paths is None else {}
    out = {}
    for agent in agents:
        found = _resolve(gym, agent, config_paths, index)
        if isinstance(found, str):
            out[agent] = {"model": None, "required": [], "unchecked": found}
        else:
            out[agent] = _requirements(gym, found)
    return out


def _resolve(gym: _Gym, agent: str, config_paths: list[str] | None, index: dict):
    """The apps serving ``agent`` (see ``_Gym.apps``), else why it cannot be resolved."""
    if config_paths is not None:
        cfg, missing = gym.merged(list(config_paths))
        found = gym.apps(cfg, agent, {}) if agent in cfg else "config_paths do not declare it"
        if isinstance(found, str) and missing:
            found += f" (config_paths not found: {', '.join(missing)})"
    elif agent not in index:
        found = "no Gym config declares it"
    else:  # prefer a declaration whose chain is complete and has a resources server
        tries, errors = [], []
        for rel in index[agent]:
            cfg, missing = gym.merged([rel])
            apps = gym.apps(cfg, agent, index)
            errors += [f"{rel}: {apps}"] if isinstance(apps, str) else []
            tries += [(bool(missing), len(apps) < 2, apps)] if isinstance(apps, list) else []
        found = min(tries, key=lambda t: t[:2])[2] if tries else "; ".join(errors)
    return f"agent '{agent}' cannot be resolved: {found}" if isinstance(found, str) else found


def _requirements(gym: _Gym, apps: list[tuple[str, str, str]]) -> dict:
    """The fields the models of ``apps`` require, named by the models that require them."""
    labels, required, problems = [], set(), []
    for role, type_, app in reversed(apps):  # server first: its verify names the task fields
        for endpoint, added in ((e, added) for r, e, added in ENDPOINTS if r == role):
            body = gym.body_model(app, role, endpoint)
            if isinstance(body, str):
                problems.append(body)
            elif body:
                fields, validators = gym.model(*body)
                new = {k for f, (k, req) in fields.items() if req and f != added} - required
                label = f"{type_}.{endpoint}: {body[1].name}"
                labels += [label] if new or not labels else []
                required |= new
                problems += [f"{label} has {v}, which may fill in fields" for v in validators]
    model = " + ".join(labels) or None
    if problems or not labels:
        unchecked = "; ".join(problems) or "no request model found"
        return {"model": model, "required": [], "unchecked": unchecked}
    return {"model": model, "required": sorted(required), "unchecked": None}
