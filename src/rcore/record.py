"""Records: classes declared by annotated fields, given __init__, __repr__ and
__eq__ (frozen: __hash__, and no assignment) as the standard `dataclasses`
gives them, for the part of it rcore uses: defaults, default factories,
field(repr=False), frozen, inheritance, fields(), replace(), asdict().

Why not dataclasses: every command a user types pays for rcore's imports, and
`import dataclasses` costs 11-12 ms (it imports inspect, which imports ast,
dis, tokenize, linecache...), then each decorated class 0.5-0.6 ms more (an
exec per method, signature inspection): about 25 ms of a CLI dump for rcore's
25 classes.  A record class costs 0.04 ms to declare: its first 8 instances
are made by one generic __init__ (a few microseconds each), then the
straight-line one a dataclass has is compiled (0.1-0.6 ms by the number of
fields) and makes the others as fast (thousands of Mappings in a big dump);
__eq__ is compiled on first use, repr and a frozen record's hash are shared
functions.  A class made a few times per command (ProcessState, Stat,
DumpSummary) is never compiled: 2-2.5 ms of a CLI dump.

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
    methods = {"__init__": _deferred(cls, "__init__", lambda: _compile_init(cls, frozen),
                                     _bind_frozen if frozen else _bind),
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


# Instances of a class made through _bind before its __init__ is compiled.
HOT = 8


def _deferred(cls, name, make, generic=None):
    """Method `name` of cls as a stand-in that compiles the real one (make()),
    puts it in its place and hands over to it: on its first call, or with
    `generic` after HOT calls of generic(cls, self, ...).  Declaring a class
    compiles nothing, one never used in a run costs nothing more, and one made
    only a few times per command (a ProcessState: 0.6 ms to compile its 38
    fields) costs no compilation either."""
    calls = 0

    def method(self, *args, **kwargs):
        nonlocal calls
        if generic is not None and calls < HOT:
            calls += 1
            return generic(cls, self, args, kwargs)
        real = make()
        if cls.__dict__.get(name) is method:
            setattr(cls, name, real)
        return real(self, *args, **kwargs)
    method.__qualname__ = f"{cls.__qualname__}.{name}"
    return method


def _bind(cls, self, args, kwargs, set_field=setattr):
    """What the compiled __init__ does, for any record, argument by argument
    (a few microseconds an instance); the same TypeErrors."""
    names = getattr(cls, _NAMES)
    if len(args) > len(names):
        raise TypeError(f"{cls.__qualname__}.__init__() takes {len(names) + 1} positional "
                        f"arguments but {len(args) + 1} were given")
    values = dict(zip(names, args))
    for name, value in kwargs.items():
        if name in values:
            raise TypeError(f"{cls.__qualname__}.__init__() got multiple values for "
                            f"argument {name!r}")
        values[name] = value
    for f in getattr(cls, _FIELDS):
        if f.name in values:
            value = values.pop(f.name)
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        elif f.default is not MISSING:
            value = f.default
        else:
            raise TypeError(f"{cls.__qualname__}.__init__() missing required argument: "
                            f"{f.name!r}")
        set_field(self, f.name, value)
    if values:
        raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument "
                        f"{next(iter(values))!r}")


def _bind_frozen(cls, self, args, kwargs):
    _bind(cls, self, args, kwargs, object.__setattr__)


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
