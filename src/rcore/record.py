"""Records: classes declared by annotated fields, given __init__, __repr__ and
__eq__ (frozen: __hash__, and no assignment) as the standard `dataclasses`
gives them, for the part of it rcore uses: defaults, default factories,
field(repr=False), frozen, inheritance, fields(), replace(), asdict().

Why not dataclasses: every command a user types pays for rcore's imports, and
`import dataclasses` costs 11-12 ms (it imports inspect, which imports ast,
dis, tokenize, linecache...), then each decorated class 0.5-0.6 ms more (an
exec per method, signature inspection): about 25 ms of a CLI dump for rcore's
25 classes.  A record class costs 0.04 ms to declare: its __init__ and __eq__
are compiled on first use (about 0.1 ms each), its repr and a frozen record's
hash are shared functions.  Instances are made by the same straight-line
__init__ a dataclass has, as fast (thousands of Mappings in a big dump), and
compared as fast.

Differences from dataclasses, none of which rcore relies on: every annotation
is a field (no ClassVar, InitVar, __post_init__, kw_only, slots, order); a
frozen record refuses every assignment; repr does not guard against a record
that contains itself."""

_FIELDS = "__record_fields__"
_NAMES = "__record_names__"


class _Missing:
    def __repr__(self):
        return "MISSING"


MISSING = _Missing()


class Field:
    """One declared field: its name, default or default factory (MISSING:
    none), and whether repr shows it."""
    __slots__ = ("name", "default", "default_factory", "repr")

    def __init__(self, default=MISSING, default_factory=MISSING, repr=True):
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = None
        self.default = default
        self.default_factory = default_factory
        self.repr = repr

    def __repr__(self):
        return (f"Field(name={self.name!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r}, repr={self.repr!r})")


def field(*, default=MISSING, default_factory=MISSING, repr=True):
    return Field(default, default_factory, repr)


def record(cls=None, *, frozen=False):
    """Class decorator: @record or @record(frozen=True)."""
    def wrap(cls):
        return _build(cls, frozen)
    return wrap if cls is None else wrap(cls)


def fields(class_or_instance):
    """The Fields of a record class or instance, in declaration order (a base
    class's first)."""
    try:
        return getattr(class_or_instance, _FIELDS)
    except AttributeError:
        raise TypeError(f"{class_or_instance!r} is not a record") from None


def replace(obj, /, **changes):
    """A new record like obj, with changes (through __init__, as
    dataclasses.replace)."""
    for name in getattr(type(obj), _NAMES):
        if name not in changes:
            changes[name] = getattr(obj, name)
    return type(obj)(**changes)


_SCALARS = frozenset({int, str, bool, float, bytes, type(None)})


def asdict(value):
    """value with records turned into dicts and containers copied, recursively.
    (dataclasses.asdict does the same through deepcopy: 10x slower, 0.1 s for
    9000 mappings.)"""
    if type(value) in _SCALARS:
        return value
    names = getattr(type(value), _NAMES, None)
    if names is not None:
        d = {}
        for name in names:
            v = getattr(value, name)
            d[name] = v if type(v) in _SCALARS else asdict(v)
        return d
    if isinstance(value, list):
        return [asdict(v) for v in value]
    if isinstance(value, tuple):
        return tuple(asdict(v) for v in value)
    if isinstance(value, dict):
        return {k: asdict(v) for k, v in value.items()}
    return value


def _collect(cls):
    """The fields of cls: its bases' (a redeclared one keeps its place), then
    its own annotations; class attributes set to the defaults, as dataclasses
    leaves them."""
    found = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get(_FIELDS, ()):
            found[f.name] = f
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        if type(f.default) in (list, dict, set):
            raise ValueError(f"mutable default {type(f.default).__name__} for field "
                             f"{name} of {cls.__name__}: use default_factory")
        f.name = name
        if f.default is not MISSING:
            setattr(cls, name, f.default)
        elif name in cls.__dict__:
            delattr(cls, name)
        found[name] = f
    return tuple(found.values())


def _build(cls, frozen):
    all_fields = _collect(cls)
    names = tuple(f.name for f in all_fields)
    required = [f.name for f in all_fields if f.default is MISSING
                and f.default_factory is MISSING]
    if names[:len(required)] != tuple(required):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    setattr(cls, _FIELDS, all_fields)
    setattr(cls, _NAMES, names)
    methods = {"__init__": _deferred(cls, "__init__", lambda: _compile_init(cls, frozen)),
               "__eq__": _deferred(cls, "__eq__", lambda: _compile_eq(cls)),
               "__repr__": _repr}
    if frozen:
        methods.update(__hash__=_hash, __setattr__=_refuse_set, __delattr__=_refuse_delete)
    elif "__hash__" not in cls.__dict__:
        methods["__hash__"] = None      # mutable and compared by value: unhashable
    for name, method in methods.items():
        if name not in cls.__dict__:
            setattr(cls, name, method)
    return cls


def _deferred(cls, name, make):
    """Method `name` of cls as a stand-in that, on its first call, compiles the
    real one (make()), puts it in its place and hands over to it: declaring a
    class compiles nothing, and one never used in a run costs nothing more."""
    def method(self, *args, **kwargs):
        real = make()
        if cls.__dict__.get(name) is method:
            setattr(cls, name, real)
        return real(self, *args, **kwargs)
    method.__qualname__ = f"{cls.__qualname__}.{name}"
    return method


def _compile(cls, name, lines, namespace):
    exec("\n".join(lines), namespace)
    method = namespace[name]
    method.__qualname__ = f"{cls.__qualname__}.{name}"
    return method


def _compile_init(cls, frozen):
    """The straight-line __init__ dataclasses writes: one assignment per field,
    defaults as parameter defaults, factories called when not given."""
    namespace = {"MISSING": MISSING, "_setattr": object.__setattr__}
    params, body = [], []
    for f in getattr(cls, _FIELDS):
        n = f.name
        if f.default_factory is not MISSING:
            namespace[f"_factory_{n}"] = f.default_factory
            params.append(f"{n}=MISSING")
            value = f"_factory_{n}() if {n} is MISSING else {n}"
        elif f.default is not MISSING:
            namespace[f"_default_{n}"] = f.default
            params.append(f"{n}=_default_{n}")
            value = n
        else:
            params.append(n)
            value = n
        body.append(f"  _setattr(self, {n!r}, {value})" if frozen else f"  self.{n} = {value}")
    return _compile(cls, "__init__", [f"def __init__(self, {', '.join(params)}):", *body,
                                      "  pass"], namespace)


def _compile_eq(cls):
    """Equal: the same class and equal fields, compared as tuples (dataclasses'
    __eq__)."""
    names = getattr(cls, _NAMES)
    own = "".join(f"self.{n}," for n in names)
    other = "".join(f"other.{n}," for n in names)
    return _compile(cls, "__eq__", ["def __eq__(self, other):",
                                    "  if other.__class__ is self.__class__:",
                                    f"    return ({own}) == ({other})",
                                    "  return NotImplemented"], {})


# Shared by every record: rarely called, they need no compiled copy per class.

def _hash(self):
    return hash(tuple(getattr(self, n) for n in getattr(self, _NAMES)))


def _repr(self):
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in getattr(self, _FIELDS)
                      if f.repr)
    return f"{self.__class__.__qualname__}({shown})"


def _refuse_set(self, name, value):
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_delete(self, name):
    raise FrozenInstanceError(f"cannot delete field {name!r}")


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record."""
