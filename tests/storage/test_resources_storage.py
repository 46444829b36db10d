"""Progress updates of live resources in two statements per batch (storage/resources.py),
on SQLite and PostgreSQL: each update applies only to a resource still in its status
and of its service, and the caller learns which did."""
from storage import resources as store


async def _declare(tx, key: str, status: str, service: str | None) -> None:
    row = store.new(resource_type="task", resource_id=key, status=status, progress=0.0, result=None, error=None,
                    owner_ids=[], room=None, service=service)
    tx.add(row)
    await tx.flush()


async def test_a_batch_of_progress_updates_applies_where_it_may(db):
    async with db.transaction() as tx:
        for i in range(300):
            await _declare(tx, f"t{i}", "running", "encoder")
        await _declare(tx, "done", "succeeded", "encoder")
        await _declare(tx, "theirs", "running", "someone-else")
        await _declare(tx, "nobody", "running", None)
    updates = [store.Progress("task", f"t{i}", "running", "encoder", {"progress": float(i % 100)})
               for i in range(300)]
    updates += [
        store.Progress("task", "t7", "running", "encoder", {"progress": 55.0, "result": {"frames": 12}}),
        store.Progress("task", "done", "running", "encoder", {"progress": 1.0}),  # it ended: not this way
        store.Progress("task", "theirs", "running", "encoder", {"progress": 1.0}),  # another service's
        store.Progress("task", "missing", "running", "encoder", {"progress": 1.0}),
        store.Progress("task", "nobody", "running", None, {"error": "slow"}),  # no service on either side
    ]
    async with db.transaction() as tx:
        rows = await store.progress(tx, updates)
    assert [r is None for r in rows[-4:]] == [True, True, True, False]
    assert all(r is not None for r in rows[:301])
    assert (rows[5].progress, rows[5].version) == (5.0, 2)
    # Updated twice in the batch: both read its last state, two versions on.
    assert rows[7] is rows[300] and (rows[7].progress, rows[7].result, rows[7].version) == (55.0, {"frames": 12}, 3)
    assert rows[-1].error == "slow" and rows[-1].progress == 0.0
    async with db.transaction() as tx:
        assert (await store.get(tx, "task", "done")).version == 1
        assert (await store.get(tx, "task", "theirs")).progress == 0.0
        assert (await store.get(tx, "task", "t299")).progress == 99.0
