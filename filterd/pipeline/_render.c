/* render(answer, now) for filterd.pipeline.cache: a cached answer with its
 * TTLs aged to ``now``.
 *
 * Why: a cached answer is rendered again at most once per second of its age
 * (cache.py's module docstring), which at a realistic query mix is the first
 * query of a name in a second: most queries at 10k qps. In Python the render
 * was the dearest step of a cache hit: a bytearray copy of the answer, an
 * iterator and a tuple per TTL field, a ``Struct.pack_into`` call per field
 * (argument parsing, a buffer export) and a bytes copy back, about 7,000 CPU
 * instructions of a hit's 24,000 (bench/wakeup, ``filterd-distinct``). This
 * is the same function with one copy.
 *
 * Contract (the same as ``cache._render``, the fallback of an install without
 * a C compiler):
 *   render(answer, now) -> (wire, due, cnames, meta), or None once expired
 * ``answer`` is a cache entry: a tuple (wire bytes, due float, CNAME targets,
 * meta bytes); ``meta`` is ``struct.pack("=dd", stored_at, expires_at)``
 * followed by ``struct.pack("=HI", offset, ttl)`` per TTL field of ``wire``
 * (native byte order, standard sizes, no padding). The age is
 * ``int(now - stored_at)``; every TTL field becomes ``max(ttl - age, 0)``
 * (network order); ``due`` is ``min(stored_at + age + 1, expires_at)``. A
 * malformed entry (never stored by the cache) raises ValueError instead of
 * writing outside ``wire``.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define TIMES_SIZE 16 /* "=dd" */
#define FIELD_SIZE 6  /* "=HI" */

static PyObject *
render(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "render() takes 2 arguments (answer, now), %zd given",
                     nargs);
        return NULL;
    }
    PyObject *answer = args[0];
    if (!PyTuple_CheckExact(answer) || PyTuple_GET_SIZE(answer) != 4) {
        PyErr_SetString(PyExc_TypeError, "render(): answer must be a 4-tuple");
        return NULL;
    }
    PyObject *wire = PyTuple_GET_ITEM(answer, 0);
    PyObject *cnames = PyTuple_GET_ITEM(answer, 2);
    PyObject *meta = PyTuple_GET_ITEM(answer, 3);
    if (!PyBytes_CheckExact(wire) || !PyBytes_CheckExact(meta)) {
        PyErr_SetString(PyExc_TypeError, "render(): an answer's wire and meta must be bytes");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t meta_size = PyBytes_GET_SIZE(meta);
    if (meta_size < TIMES_SIZE || (meta_size - TIMES_SIZE) % FIELD_SIZE) {
        PyErr_Format(PyExc_ValueError, "render(): meta of %zd octets", meta_size);
        return NULL;
    }
    const char *packed = PyBytes_AS_STRING(meta);
    double stored_at, expires_at;
    memcpy(&stored_at, packed, sizeof stored_at);
    memcpy(&expires_at, packed + sizeof stored_at, sizeof expires_at);
    if (now >= expires_at) {
        Py_RETURN_NONE;
    }
    double elapsed = now - stored_at;
    if (!(elapsed > -9.0e18 && elapsed < 9.0e18)) { /* int() of it would not fit */
        PyErr_SetString(PyExc_ValueError, "render(): age out of range");
        return NULL;
    }
    int64_t age = (int64_t)elapsed; /* truncated toward zero, as int() */
    Py_ssize_t size = PyBytes_GET_SIZE(wire);
    PyObject *out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(wire), size);
    if (out == NULL) {
        return NULL;
    }
    unsigned char *bytes = (unsigned char *)PyBytes_AS_STRING(out);
    for (const char *field = packed + TIMES_SIZE; field < packed + meta_size;
         field += FIELD_SIZE) {
        uint16_t offset;
        uint32_t ttl;
        memcpy(&offset, field, sizeof offset);
        memcpy(&ttl, field + sizeof offset, sizeof ttl);
        if ((Py_ssize_t)offset + 4 > size) {
            Py_DECREF(out);
            PyErr_Format(PyExc_ValueError, "render(): TTL field at %u of a %zd-octet answer",
                         (unsigned int)offset, size);
            return NULL;
        }
        int64_t left = (int64_t)ttl > age ? (int64_t)ttl - age : 0;
        uint32_t value = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
        bytes[offset] = (unsigned char)(value >> 24);
        bytes[offset + 1] = (unsigned char)(value >> 16);
        bytes[offset + 2] = (unsigned char)(value >> 8);
        bytes[offset + 3] = (unsigned char)value;
    }
    double due = stored_at + (double)age + 1.0;
    PyObject *due_object = PyFloat_FromDouble(due < expires_at ? due : expires_at);
    if (due_object == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *rendered = PyTuple_New(4);
    if (rendered == NULL) {
        Py_DECREF(out);
        Py_DECREF(due_object);
        return NULL;
    }
    Py_INCREF(cnames);
    Py_INCREF(meta);
    PyTuple_SET_ITEM(rendered, 0, out);
    PyTuple_SET_ITEM(rendered, 1, due_object);
    PyTuple_SET_ITEM(rendered, 2, cnames);
    PyTuple_SET_ITEM(rendered, 3, meta);
    return rendered;
}

static PyMethodDef methods[] = {
    {"render", (PyCFunction)(void (*)(void))render, METH_FASTCALL,
     "render(answer, now, /): a cache entry with its TTLs aged to now, or None once "
     "expired (see filterd.pipeline.cache)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "filterd.pipeline._render",
    "A cached answer's TTLs aged in one copy (see filterd.pipeline.cache).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__render(void)
{
    return PyModule_Create(&module);
}
