#ifndef CSQLITE_SHIM_H
#define CSQLITE_SHIM_H
#include <sqlite3.h>
#include <stdint.h>
#include <unistd.h>

/// SQLITE_TRANSIENT does not import into Swift: SQLite copies bound text and blobs before the call returns.
static inline sqlite3_destructor_type CSQLite_transient(void) { return SQLITE_TRANSIENT; }

/// A busy handler for writers that wait on each other inside one process: short sleeps first (a group
/// commit holds the lock for about a millisecond), so a waiter does not oversleep the way SQLite's default
/// handler does (its first waits are 1, 2, 5 and 10 ms); then 1 ms sleeps until `timeout_ms` has passed.
static int CSQLite_busy_wait(void *timeout_ms, int count) {
    long limit = (long)(intptr_t)timeout_ms;
    if (count < 200) { usleep(25); return 1; }
    if ((long)(count - 200) >= limit) { return 0; }
    usleep(1000);
    return 1;
}

/// Installs ``CSQLite_busy_wait`` with a limit of `timeout_ms`.
static inline int CSQLite_set_busy_wait(sqlite3 *db, long timeout_ms) {
    return sqlite3_busy_handler(db, CSQLite_busy_wait, (void *)(intptr_t)timeout_ms);
}

/// A WAL hook that only records the WAL's length in frames after each commit of the connection, in the
/// `int` that `frames` points to. Installing it replaces SQLite's automatic checkpoint (which is itself a WAL
/// hook), so the commit no longer copies pages back into the database; someone else must checkpoint.
static int CSQLite_record_wal_frames(void *frames, sqlite3 *db, const char *name, int count) {
    (void)db; (void)name;
    __atomic_store_n((int *)frames, count, __ATOMIC_RELAXED);
    return SQLITE_OK;
}

/// Installs ``CSQLite_record_wal_frames`` writing to `frames`.
static inline void CSQLite_watch_wal(sqlite3 *db, int *frames) {
    sqlite3_wal_hook(db, CSQLite_record_wal_frames, frames);
}

/// Overwrites the recorded count (after a checkpoint emptied the WAL).
static inline void CSQLite_set_wal_frames(int *frames, int count) { __atomic_store_n(frames, count, __ATOMIC_RELAXED); }

/// The count ``CSQLite_record_wal_frames`` last recorded.
static inline int CSQLite_wal_frames(const int *frames) { return __atomic_load_n(frames, __ATOMIC_RELAXED); }

#endif
