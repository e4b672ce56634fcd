"""``@step``: a plain function plus what isthmus needs to run, cache and record it anywhere."""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Generic, ParamSpec, TypeVar, overload

from isthmus.errors import NotImportableError, StepDefinitionError, StepFailed
from isthmus.lineage.naming import dataset_id
from isthmus.policy import CachePolicy
from isthmus.redaction import redact_url

if typing.TYPE_CHECKING:
    from isthmus.resources import Resources

P = ParamSpec("P")
R = TypeVar("R")

# Set while a @pipeline body is traced: step calls then build the graph instead of running.
CURRENT_TRACER: ContextVar[Any] = ContextVar("isthmus_tracer", default=None)


def _return_annotation(fn: Callable[..., Any], *, extras: bool = False) -> Any:
    """The return annotation (``extras``: with ``Annotated[...]`` metadata kept)."""
    try:
        return typing.get_type_hints(fn, include_extras=extras).get("return", inspect.Signature.empty)
    except Exception:  # unresolved forward references: fall back to the raw annotation
        return fn.__annotations__.get("return", inspect.Signature.empty)


def _annotated_name(tp: Any) -> str | None:
    """The output name ``Annotated[X, "name"]`` gives (its first str metadata), if any."""
    if typing.get_origin(tp) is typing.Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, str)), None)
    return None


def _output_names(fn: Callable[..., Any], explicit: Sequence[str] | None, label: str) -> tuple[str, ...]:
    if explicit:
        return tuple(explicit)
    ret = _return_annotation(fn, extras=True)
    single = _annotated_name(ret)
    if single is not None:
        return _outputs([single], label, "-> Annotated[..., name]")
    if typing.get_origin(ret) is typing.Annotated:  # no name in it: what it annotates
        ret = typing.get_args(ret)[0]
    if isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields"):
        return tuple(ret._fields)
    if typing.get_origin(ret) is tuple:
        args = typing.get_args(ret)
        if args and args[-1] is not Ellipsis and args != ((),):
            names = [_annotated_name(a) or f"output_{i}" for i, a in enumerate(args)]
            return _outputs(names, label, "-> tuple[Annotated[..., name], ...]")
    return ("output",)


def _main_module_name() -> str | None:
    """The importable name of ``__main__`` when run as ``python -m pkg.mod``, else None."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None and spec.name != "__main__" else None


class Step(Generic[P, R]):
    """A portable step. Calling it outside a pipeline just calls the function."""

    fn: Callable[P, R]

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        resources: Resources | Mapping[str, Any] | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
        cache: CachePolicy | bool | None = None,
        outputs: Sequence[str] | None = None,
        materializers: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        owner: str | None = None,
        enable_lineage: bool = True,
        lineage_inputs: Sequence[str | tuple[str, str]] = (),
        lineage_outputs: Sequence[str | tuple[str, str]] = (),
    ) -> None:
        if isinstance(fn, Step):
            fn = fn.fn
        if not callable(fn):
            raise StepDefinitionError(f"@step needs a function, got {fn!r}")
        if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
            raise StepDefinitionError(
                f"step {getattr(fn, '__qualname__', fn)!r} is a coroutine or generator function; "
                "steps must be plain functions that return their outputs"
            )
        self.fn = fn
        self.name = name or fn.__name__
        label = f"step {self.name!r}"
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise StepDefinitionError(f"{label}: retries={retries!r} must be a whole number >= 0, e.g. retries=2")
        if not isinstance(retry_delay, (int, float)) or retry_delay < 0:
            raise StepDefinitionError(f"{label}: retry_delay={retry_delay!r} must be seconds >= 0")
        self._resources: Resources | None = None  # None: nothing requested (built when first read)
        if resources is not None:
            from isthmus.resources import Resources  # pydantic: imported only by steps that request resources

            try:
                self._resources = Resources.coerce(resources)
            except StepDefinitionError as exc:
                raise StepDefinitionError(f"{label}: {exc}") from None
        self.retries = retries
        self.retry_delay = float(retry_delay)
        self.cache = CachePolicy.coerce(cache)
        self._explicit_outputs = _outputs(outputs, label) if outputs else None
        self.materializers = dict(materializers or {})
        self.tags = tuple(tags)
        self.owner = owner
        self.enable_lineage = enable_lineage
        # External data the step reads or writes (a table, a path): joins the lineage graph.
        self.lineage_inputs = tuple(_external(d, label) for d in lineage_inputs)
        self.lineage_outputs = tuple(_external(d, label) for d in lineage_outputs)
        self.signature = inspect.signature(fn)
        unknown = [n for n in self.cache.ignore_inputs if n not in self.signature.parameters]
        if unknown:
            raise StepDefinitionError(
                f"{label}: CachePolicy(ignore_inputs={list(self.cache.ignore_inputs)}) names {unknown}, "
                f"which are not parameters of {fn.__qualname__}{self.signature}"
            )
        functools.update_wrapper(self, fn)

    @property
    def resources(self) -> Resources:
        """What the step requested (an empty :class:`~isthmus.resources.Resources` when nothing was)."""
        if self._resources is None:
            from isthmus.resources import Resources

            self._resources = Resources()
        return self._resources

    @resources.setter
    def resources(self, value: Resources | Mapping[str, Any] | None) -> None:
        from isthmus.resources import Resources

        self._resources = Resources.coerce(value)

    def resources_dict(self) -> dict[str, Any]:
        """The requested resources as recorded in a step run (only what was set)."""
        return {} if self._resources is None else self._resources.to_dict()

    # -- identity -------------------------------------------------------------------------------
    @functools.cached_property
    def output_names(self) -> tuple[str, ...]:
        return _output_names(self.fn, self._explicit_outputs, f"step {self.name!r}")

    @functools.cached_property
    def output_namedtuple(self) -> type | None:
        """The NamedTuple class the function returns, if any (pipelines hand back its fields)."""
        ret = _return_annotation(self.fn)
        if isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields") and not self._explicit_outputs:
            return ret
        return None

    @property
    def module(self) -> str:
        mod = self.fn.__module__
        if mod == "__main__":
            return _main_module_name() or mod
        return mod

    @property
    def import_path(self) -> str:
        """``module:qualname`` used by remote runners to rebuild the step."""
        return f"{self.module}:{self.fn.__qualname__}"

    def importable_reason(self) -> str | None:
        """Why this step cannot be imported by path in another process (None when it can)."""
        qual = self.fn.__qualname__
        if self.fn.__name__ == "<lambda>":
            return "it is a lambda; define it with def at module level"
        if "<locals>" in qual:
            return "it is defined inside another function; move it to module level"
        if self.module == "__main__":
            return (
                "it is defined in __main__ (the script you ran); move it to a module and import it, "
                "or run the script with 'python -m package.module'"
            )
        return None

    def check_importable(self) -> None:
        """Raise :class:`NotImportableError` if a remote runner could not import this step."""
        reason = self.importable_reason()
        if reason:
            raise NotImportableError(f"step {self.name!r} cannot run remotely: {reason}")

    # -- calling ---------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tracer = CURRENT_TRACER.get()
        if tracer is not None:
            return tracer.add(self, args, kwargs)
        return self.fn(*args, **kwargs)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map call arguments to parameter names (defaults applied); clear error on a bad call."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise StepDefinitionError(f"step {self.name!r} called with bad arguments: {exc}") from None
        bound.apply_defaults()
        out: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise StepDefinitionError(
                    f"step {self.name!r}: *args/**kwargs parameters are not supported; name each parameter"
                )
            out[name] = value
        return out

    def invoke(self, arguments: Mapping[str, Any]) -> Any:
        """Call the function with named arguments (as bound by :meth:`bind`)."""
        pos = []
        kw = {}
        for name, param in self.signature.parameters.items():
            if name not in arguments:
                continue
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                pos.append(arguments[name])
            else:
                kw[name] = arguments[name]
        return self.fn(*pos, **kw)

    def partial(self, **fixed: Any) -> PartialStep:
        """Fix some arguments before :meth:`PartialStep.map` maps over the others (Airflow's
        ``.partial().expand()``): ``genre_stats.partial(csv=csv).map(genre=genres)``."""
        return PartialStep(self, fixed)

    def map(self, **mapped: Any) -> Any:
        """One step run per item: ``step.map(x=xs, y=ys)`` zips the lists given (same length) and runs the
        step on each pair. In a pipeline body a list may be a step output (resolved at run time); the
        result stands for the list of outputs, and a step taking it receives a ``list`` of values.
        Outside a pipeline it calls the function once per item and returns the list of results."""
        return PartialStep(self, {}).map(**mapped)

    def split_outputs(self, result: Any) -> dict[str, Any]:
        """Name a function's return value by this step's outputs."""
        names = self.output_names
        if len(names) == 1:
            return {names[0]: result}
        if not isinstance(result, tuple) or len(result) != len(names):
            raise StepDefinitionError(
                f"step {self.name!r} declares {len(names)} outputs {list(names)} but returned "
                f"{type(result).__name__}; return a tuple of {len(names)} values"
            )
        return dict(zip(names, result, strict=True))

    def run(self, *args: Any, cache: bool = True, **kwargs: Any) -> Any:
        """Run this step once through the StepRunner; returns a StepResult. Recorded under a pipeline run
        of its own, named after the step (``isthmus runs list`` shows it).

        ``cache=False`` computes it again without looking up the cache, and caches the fresh result.
        """
        from isthmus.pipeline_runs import run_alone  # it imports the runner, which imports this module

        if not isinstance(cache, bool):
            raise StepDefinitionError(f"step {self.name!r}: run(cache={cache!r}) must be True or False")
        try:
            return run_alone(self, self.bind(args, kwargs), recompute=not cache)
        except StepFailed:
            args = kwargs = None  # type: ignore[assignment]  # noqa: F841 - not shown by locals-printing formatters
            raise

    def __repr__(self) -> str:
        return f"<Step {self.name} ({self.import_path})>"

    def __reduce__(self) -> Any:
        # Pickle by reference so Step objects travel to other processes by import path.
        reason = self.importable_reason()
        if reason:
            raise NotImportableError(f"step {self.name!r} cannot be pickled by reference: {reason}")
        return (load_step, (self.import_path,))


class PartialStep:
    """A step with some arguments fixed, waiting for :meth:`map` (see :meth:`Step.partial`)."""

    def __init__(self, step: Step[Any, Any], fixed: Mapping[str, Any]) -> None:
        self.step = step
        self.fixed = dict(fixed)
        unknown = [n for n in self.fixed if n not in step.signature.parameters]
        if unknown:
            raise StepDefinitionError(
                f"step {step.name!r}: partial() got {unknown}, which are not parameters of "
                f"{step.fn.__qualname__}{step.signature}"
            )

    def map(self, **mapped: Any) -> Any:
        """One step run per item of the lists given (zipped); see :meth:`Step.map`."""
        step = self.step
        if not mapped:
            raise StepDefinitionError(
                f"step {step.name!r}: map() needs at least one list to map over, e.g. map(genre=genres)"
            )
        unknown = [n for n in mapped if n not in step.signature.parameters]
        twice = sorted(set(mapped) & set(self.fixed))
        if unknown or twice:
            what = f"{unknown} are not parameters of {step.fn.__qualname__}{step.signature}" if unknown else ""
            what = what or f"{twice} are given to both partial() and map(); give each to one of them"
            raise StepDefinitionError(f"step {step.name!r}: map() arguments {what}")
        tracer = CURRENT_TRACER.get()
        if tracer is not None:
            return tracer.add_mapped(step, self.fixed, mapped)
        lists = {}
        for name, values in mapped.items():
            if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
                raise StepDefinitionError(
                    f"step {step.name!r}: map({name}=...) needs a list or tuple, got {type(values).__name__}"
                )
            lists[name] = list(values)
        lengths = {len(v) for v in lists.values()}
        if len(lengths) > 1:
            sizes = {n: len(v) for n, v in lists.items()}
            raise StepDefinitionError(f"step {step.name!r}: map() lists must have the same length, got {sizes}")
        count = lengths.pop()
        return [step.invoke(step.bind((), {**self.fixed, **{n: v[i] for n, v in lists.items()}})) for i in range(count)]

    def __repr__(self) -> str:
        return f"<PartialStep {self.step.name} fixed={sorted(self.fixed)}>"


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...
@overload
def step(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    resources: Resources | Mapping[str, Any] | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    cache: CachePolicy | bool | None = None,
    outputs: Sequence[str] | None = None,
    materializers: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    owner: str | None = None,
    enable_lineage: bool = True,
    lineage_inputs: Sequence[str | tuple[str, str]] = (),
    lineage_outputs: Sequence[str | tuple[str, str]] = (),
) -> Callable[[Callable[P, R]], Step[P, R]]: ...
def step(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a portable step: ``@step`` or ``@step(resources=..., retries=..., cache=...)``."""
    if fn is not None:
        return Step(fn, **options)
    return lambda f: Step(f, **options)


def _outputs(outputs: Sequence[str], label: str, given: str = "outputs=[...]") -> tuple[str, ...]:
    """Validated output names (they name artifacts and are part of the cache key); ``given``: where from."""
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    bad = [n for n in names if not isinstance(n, str) or not n.isidentifier()]
    if bad or len(set(names)) != len(names):
        raise StepDefinitionError(
            f"{label}: output names {list(names)!r} (from {given}) must be distinct names that are valid "
            "identifiers, e.g. outputs=['train', 'test']"
        )
    return names


def _external(dataset: str | tuple[str, str], label: str) -> tuple[str, str]:
    """(namespace, name) of an external dataset given as a URI or an OpenLineage (namespace, name) pair."""
    if isinstance(dataset, str):
        if "://" not in dataset and not dataset.startswith("/"):
            raise StepDefinitionError(
                f"{label}: lineage dataset {dataset!r} needs a scheme, e.g. 'postgres://db:5432/shop.public.orders', "
                "'s3://bucket/key' or an absolute path, or give (namespace, name)"
            )
        return dataset_id(dataset)
    if isinstance(dataset, tuple) and len(dataset) == 2 and all(isinstance(x, str) and x for x in dataset):
        return redact_url(dataset[0]), redact_url(dataset[1])  # (a URL's credentials are never a name)
    raise StepDefinitionError(f"{label}: lineage dataset {dataset!r} must be a URI string or a (namespace, name) pair")


def load_step(import_path: str) -> Step[Any, Any]:
    """Rebuild a step from ``module:qualname`` (plain functions are wrapped with default options)."""
    module_name, sep, qualname = import_path.partition(":")
    if not sep or not module_name or not qualname:
        raise NotImportableError(f"step path {import_path!r} must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise NotImportableError(
            f"cannot import module {module_name!r} for step {import_path!r}: {exc}; "
            "make sure the project is installed or on PYTHONPATH where the step runs"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise NotImportableError(
                f"module {module_name!r} has no attribute {qualname!r} (step {import_path!r})"
            ) from None
    if isinstance(obj, Step):
        return obj
    if callable(obj):
        return Step(obj)
    raise NotImportableError(f"{import_path!r} is {type(obj).__name__}, not a step or function")


def as_step(obj: Step[Any, Any] | Callable[..., Any]) -> Step[Any, Any]:
    """A Step for ``obj`` (itself if it already is one)."""
    return obj if isinstance(obj, Step) else Step(obj)
