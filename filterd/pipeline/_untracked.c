/* store(table, key, value) for filterd.pipeline.untracked: a dict entry whose
 * value, a tuple of plain values, is kept out of the cyclic garbage
 * collector's sight.
 *
 * Why: the query path keeps its answers, repeats and verdicts in dicts of
 * tuples of bytes and numbers (filterd.pipeline.cache, .pipeline, .policy,
 * .rewrite). A new tuple is tracked by the collector, and a dict holding a
 * tracked value becomes tracked itself, for good. The collector then visits
 * every new tuple once and every entry of every such dict whenever it
 * collects the dict's generation: in a worker serving 59k queries a second,
 * 6-20 ms young collections every second while the tables filled and
 * 40-140 ms ones after a list swap (bench/README.md, "Collector pauses").
 * CPython untracks such a tuple itself, but only during a collection, after
 * it has paid to visit it; this does it before the tuple is stored, by the
 * rule CPython uses (_PyTuple_MaybeUntrack): only a tuple none of whose items
 * the collector tracks, which therefore cannot be part of a reference cycle.
 * Nested tuples (an answer inside a served entry) are untracked first, by
 * the same rule. A dict whose keys and values are all untracked stays
 * untracked (CPython tracks a dict only when a tracked object is stored in
 * it), and no collection visits it.
 *
 * The store happens here, not in the caller, because compiled callers
 * (mypyc) keep fixed-length tuples unboxed and box a new tuple wherever one
 * becomes an object: the tuple untracked must be the one stored.
 *
 * Contract (the same as the fallback in untracked.py, which runs where no C
 * compiler was available at install time):
 *   store(table, key, value) -> None: table[key] = value
 * ``table`` must be a dict. Only the collector's bookkeeping differs: never
 * the value, its reference count or its life.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_DEPTH 4 /* the query path's entries nest three deep at most */

/* Untrack ``tuple`` if none of its items is tracked once nested tuples have
 * been through the same rule; returns 1 if it is (or was) untracked. */
static int
untrack(PyObject *tuple, int depth)
{
    if (!PyObject_GC_IsTracked(tuple)) {
        return 1;
    }
    if (depth >= MAX_DEPTH) {
        return 0;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(tuple);
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (item == NULL) {
            return 0;
        }
        if (!PyObject_IS_GC(item) || !PyObject_GC_IsTracked(item)) {
            continue;
        }
        if (!PyTuple_CheckExact(item) || !untrack(item, depth + 1)) {
            return 0;
        }
    }
    PyObject_GC_UnTrack(tuple);
    return 1;
}

static PyObject *
store(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "store() takes 3 arguments (table, key, value), %zd given",
                     nargs);
        return NULL;
    }
    PyObject *table = args[0];
    PyObject *value = args[2];
    if (!PyDict_CheckExact(table)) {
        PyErr_Format(PyExc_TypeError, "store(): table must be a dict, not %.100s",
                     Py_TYPE(table)->tp_name);
        return NULL;
    }
    if (PyTuple_CheckExact(value)) {
        untrack(value, 0);
    }
    if (PyDict_SetItem(table, args[1], value) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"store", (PyCFunction)(void (*)(void))store, METH_FASTCALL,
     "store(table, key, value, /): table[key] = value, a tuple value untracked by the "
     "cyclic collector when none of its items is tracked."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "filterd.pipeline._untracked",
    "Table entries kept out of the cyclic collector's sight (see untracked.py).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__untracked(void)
{
    return PyModule_Create(&module);
}
