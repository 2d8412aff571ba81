"""A few related rows read in their parent's query: a correlated subquery that returns them as one JSON array
(SQLite's `json_group_array`, PostgreSQL's `jsonb_agg`), and the model instances made back from it.

For a page that shows one object and several short lists of what belongs to it, where a prefetch would be a
query per list. Only plain fields travel this way (numbers, text, booleans, dates and times, keys): a JSON
field's value would come back as text on SQLite, so one is refused rather than decoded differently per
database.

Building such a subquery is most of its cost: Django resolves and compiles every expression of it again on
each request (1.4 ms for a run's stage events, where the query itself takes 0.1), more than a query of its
own would cost. `compiled` does that once per process and database and hands back plain SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connections, models
from django.db.models import Aggregate, JSONField, Subquery
from django.db.models.expressions import RawSQL
from django.db.models.functions import JSONObject
from django.utils import timezone


class _JSONArrayAgg(Aggregate):
    function = "JSON_GROUP_ARRAY"
    output_field = JSONField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, function="JSONB_AGG", **extra_context)


def _fields(model: type[models.Model], names: tuple[str, ...]) -> list[models.Field]:
    fields = [model._meta.get_field(name) for name in names]
    for field in fields:
        if isinstance(field, JSONField) or not field.concrete:
            raise ValueError(f"{model.__name__}.{field.name} cannot be read as a JSON row")
    return fields


def json_rows(queryset: models.QuerySet, *names: str) -> Subquery:
    """`queryset` (filtered on an OuterRef to the parent) as one JSON array of {field: value} objects, for
    `.annotate()` on the parent; NULL when there are none. `names` are the fields read (attnames: `by_id`)."""
    fields = _fields(queryset.model, names)
    return json_values(queryset, **{field.attname: field.attname for field in fields})


def json_values(queryset: models.QuerySet, **values: Any) -> Subquery:
    """`json_rows` of any values (`name=` a field path or an expression: text, numbers), as plain dicts."""
    # One group, whatever the rows: a constant is not grouped by, so the aggregate spans them all.
    one = queryset.order_by().values(_one=models.Value(1))
    rows = _JSONArrayAgg(JSONObject(**values))
    return Subquery(one.annotate(rows=rows).values("rows"), output_field=JSONField())


def compiled(model: type[models.Model], using: str = "default", **expressions: Any) -> dict[str, RawSQL]:
    """`expressions` (annotations of `model`'s queries, OuterRefs to it included) compiled to SQL, for
    `.annotate(**compiled(…))` on any query of `model` (its table under its own name, as Django writes it).
    Cache the result per database vendor: the SQL is that database's."""
    query = model._default_manager.db_manager(using).annotate(**expressions).query
    compiler = query.get_compiler(using)
    made = {}
    for name in expressions:
        resolved = query.annotations[name]
        sql, params = compiler.compile(resolved)
        made[name] = RawSQL(sql, tuple(params), output_field=resolved.output_field)
    assert connections[using].vendor in ("sqlite", "postgresql"), connections[using].vendor
    return made


def instances(model: type[models.Model], rows: list[dict[str, Any]] | None, *names: str) -> list[Any]:
    """The model instances of `json_rows(…, *names)`'s value, as the database would have made them (the
    fields not read are deferred), in primary-key order."""
    fields = _fields(model, names)
    made = []
    for row in sorted(rows or [], key=lambda row: row[model._meta.pk.attname]):
        values = [field_value(field, row[field.attname]) for field in fields]
        made.append(model.from_db("default", [field.attname for field in fields], values))
    return made


def field_value(field: models.Field, raw: Any) -> Any:
    """`field`'s value from what a JSON object the database built holds for it (`json_rows`, `JSONObject`)."""
    if raw is None:
        return None
    if isinstance(field, models.DateTimeField):
        # SQLite keeps "2026-12-01 20:14:21.166404" (UTC, no offset); PostgreSQL writes ISO 8601 with one.
        value = datetime.fromisoformat(raw)
        if settings.USE_TZ and timezone.is_naive(value):
            value = value.replace(tzinfo=UTC)
        return value
    if isinstance(field, models.ForeignKey):
        return field.target_field.to_python(raw)
    return field.to_python(raw)


def prefetched(instance: models.Model, name: str, rows: list[Any]) -> None:
    """Hand `rows` to `instance.<name>` (a reverse foreign key) as prefetch_related would: `.all()` answers
    from them without a query."""
    manager = getattr(instance, name)
    queryset = manager.get_queryset()
    queryset._result_cache = rows
    queryset._prefetch_done = True
    if not hasattr(instance, "_prefetched_objects_cache"):
        instance._prefetched_objects_cache = {}
    instance._prefetched_objects_cache[manager.field.remote_field.cache_name] = queryset
