"""rcore.record behaves as the dataclasses it replaces, for what rcore uses."""

import dataclasses

import pytest

from rcore import record as R


def _declare(decorator, field, **options):
    """The same class declared with either module: a base and a subclass."""
    @decorator(**options)
    class Base:
        start: int
        perms: str = "r--p"
        flags: list = field(default_factory=list)
        blob: bytes = field(default=b"", repr=False)

        def size(self):
            return self.start

    @decorator(**options)
    class Sub(Base):
        extra: int = 7
        perms: str = "rw-p"         # redeclared: keeps its place, new default
    return Base, Sub


def _pair(**options):
    return _declare(dataclasses.dataclass, dataclasses.field, **options), \
        _declare(R.record, R.field, **options)


def test_init_defaults_and_factories_as_dataclasses():
    (DB, DS), (RB, RS) = _pair()
    for args, kwargs in [((1,), {}), ((1, "r-xp", [2], b"x"), {}),
                         ((), {"start": 3, "blob": b"y"}), ((1,), {"extra": 9})]:
        if "extra" in kwargs:
            d, r = DS(*args, **kwargs), RS(*args, **kwargs)
        else:
            d, r = DB(*args, **kwargs), RB(*args, **kwargs)
        assert d.__dict__ == r.__dict__
    assert RB(1).flags is not RB(1).flags           # a fresh list each time
    assert RS(1).perms == "rw-p" and RB(1).perms == "r--p"
    assert [f.name for f in R.fields(RS)] == [f.name for f in dataclasses.fields(DS)] \
        == ["start", "perms", "flags", "blob", "extra"]
    assert RB.perms == "r--p" and not hasattr(RB, "flags")   # class attributes as dataclasses
    with pytest.raises(TypeError):
        RB()
    with pytest.raises(TypeError):
        RB(1, nope=2)
    with pytest.raises(TypeError):
        RB(1, start=2)


def test_first_instances_bound_generically_then_compiled():
    """The first HOT instances of a class are made without a compiled __init__,
    the next ones with it: the same fields, defaults and errors either way."""
    (DB, DS), _ = _pair()
    _, (RB, RS) = _pair()
    stand_in = RS.__init__
    cases = [((1,), {}), ((1, "x", [1], b"b", 9), {}), ((), {"start": 2, "extra": 3}),
             ((1,), {"flags": [2], "perms": "p"})]
    errors = [((), {}), ((1, 2, 3, 4, 5, 6), {}), ((1,), {"start": 1}), ((1,), {"nope": 1})]
    for _ in range(R.HOT + 1):
        for args, kwargs in cases:
            assert RS(*args, **kwargs).__dict__ == DS(*args, **kwargs).__dict__
        for args, kwargs in errors:
            with pytest.raises(TypeError):
                RS(*args, **kwargs)
    assert RS.__init__ is not stand_in            # compiled by now
    assert RS(1).flags is not RS(1).flags


def test_repr_eq_hash_as_dataclasses():
    (DB, DS), (RB, RS) = _pair()
    assert repr(RS(1, flags=[1])) == repr(DS(1, flags=[1])).replace(DS.__qualname__,
                                                                    RS.__qualname__)
    assert "blob" not in repr(RB(1))
    assert RB(1, "r", [1]) == RB(1, "r", [1])
    assert RB(1) != RB(2)
    assert RB(1, blob=b"a") != RB(1, blob=b"b")     # repr=False still compares
    assert RB(1) != RS(1) and (RB(1) == 1) is False
    with pytest.raises(TypeError):
        hash(RB(1))                                  # mutable: unhashable, as a dataclass
    assert RB(5).size() == 5                         # the class's own methods kept
    r = RB(1)
    r.start = 4                                      # and mutable
    assert r.start == 4


def test_frozen():
    (DB, _), (RB, _) = _pair(frozen=True)
    r = RB(1, "r", (1,))
    assert hash(r) == hash(RB(1, "r", (1,))) and r == RB(1, "r", (1,))
    assert {r: 1}[RB(1, "r", (1,))] == 1
    with pytest.raises(AttributeError):
        r.start = 2
    with pytest.raises(AttributeError):
        del r.start
    assert r.start == 1 and repr(r).endswith(repr(DB(1, "r", (1,))).split(".")[-1])


def test_own_methods_not_replaced():
    @R.record
    class Own:
        x: int

        def __repr__(self):
            return "own"

        def __eq__(self, other):
            return True
    assert repr(Own(1)) == "own" and Own(1) == Own(2)


def test_replace_and_asdict():
    _, (RB, RS) = _pair()
    a = RS(1, flags=[1, 2])
    b = R.replace(a, start=2)
    assert (b.start, b.perms, b.extra) == (2, "rw-p", 7) and b.flags is a.flags   # as dataclasses
    assert type(b) is RS and a.start == 1
    with pytest.raises(TypeError):
        R.replace(a, nope=1)

    @R.record
    class Outer:
        inner: object
        items: list
        pair: tuple = ()
    o = Outer(RB(1, flags=[[1]]), [RB(2)], (RB(3), {"k": [4]}))
    d = R.asdict(o)
    assert d == dataclasses.asdict(_as_dataclasses(o))
    assert d["inner"]["flags"] is not o.inner.flags and d["inner"]["flags"][0] is not o.inner.flags[0]
    assert isinstance(d["pair"], tuple) and d["pair"][1]["k"] is not o.pair[1]["k"]


def _as_dataclasses(o):
    """o rebuilt from dataclasses of the same shape, to compare asdict with."""
    (DB, _), _ = _pair()

    @dataclasses.dataclass
    class Outer:
        inner: object
        items: list
        pair: tuple = ()

    def conv(r):
        return DB(r.start, r.perms, r.flags, r.blob)
    return Outer(conv(o.inner), [conv(i) for i in o.items], (conv(o.pair[0]), o.pair[1]))


def test_declaration_errors():
    with pytest.raises(ValueError):
        @R.record
        class Shared:
            items: list = []
    with pytest.raises(TypeError):
        @R.record
        class Order:
            a: int = 0
            b: int
    with pytest.raises(ValueError):
        R.field(default=1, default_factory=list)
    with pytest.raises(TypeError):
        R.fields(object())
