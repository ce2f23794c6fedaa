/* recvmmsg(2) and sendmmsg(2) for filterd.listeners.mmsgcalls, without ctypes.
 *
 * Why: a ctypes foreign call costs 5,000-9,000 CPU instructions (argument
 * conversion, a libffi call frame prepared per call), measured with
 * callgrind; a UDP query that wakes the worker alone makes two of them, a
 * third of the worker's user-space work per query at 10k qps. These two
 * functions are the same system calls at the cost of one C function call.
 *
 * Contract (the same as the ctypes fallback in mmsgcalls.py, which runs where no
 * C compiler was available at install time):
 *   recvmmsg(fd, msgvec, vlen, flags) -> count, or -errno on failure
 *   sendmmsg(fd, msgvec, vlen, flags) -> count, or -errno on failure
 * ``msgvec`` is the address of an array of at least ``vlen`` ``struct
 * mmsghdr`` that the caller owns and keeps alive (mmsg.Batch's preallocated
 * arrays). Callers pass MSG_DONTWAIT: the calls never block, so the GIL is
 * kept (releasing and taking it back would cost more than the call). The
 * timeout argument of recvmmsg is always NULL (see BUGS in recvmmsg(2)).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>

static int
parse(PyObject *const *args, Py_ssize_t nargs, const char *name, int *fd,
      struct mmsghdr **msgvec, unsigned int *vlen, int *flags)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "%s() takes 4 arguments (fd, msgvec, vlen, flags), %zd given",
                     name, nargs);
        return -1;
    }
    long fd_value = PyLong_AsLong(args[0]);
    if (fd_value == -1 && PyErr_Occurred()) {
        return -1;
    }
    void *address = PyLong_AsVoidPtr(args[1]);
    if (address == NULL && PyErr_Occurred()) {
        return -1;
    }
    long vlen_value = PyLong_AsLong(args[2]);
    if (vlen_value == -1 && PyErr_Occurred()) {
        return -1;
    }
    long flags_value = PyLong_AsLong(args[3]);
    if (flags_value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (fd_value < 0 || fd_value > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s(): invalid file descriptor %ld", name, fd_value);
        return -1;
    }
    if (address == NULL) {
        PyErr_Format(PyExc_ValueError, "%s(): msgvec is NULL", name);
        return -1;
    }
    if (vlen_value < 0 || vlen_value > UIO_MAXIOV) {
        PyErr_Format(PyExc_ValueError, "%s(): vlen %ld outside 0..%d", name, vlen_value, UIO_MAXIOV);
        return -1;
    }
    if (flags_value < INT_MIN || flags_value > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s(): invalid flags %ld", name, flags_value);
        return -1;
    }
    *fd = (int)fd_value;
    *msgvec = (struct mmsghdr *)address;
    *vlen = (unsigned int)vlen_value;
    *flags = (int)flags_value;
    return 0;
}

static PyObject *
call(PyObject *const *args, Py_ssize_t nargs, int receive)
{
    int fd, flags;
    struct mmsghdr *msgvec;
    unsigned int vlen;
    if (parse(args, nargs, receive ? "recvmmsg" : "sendmmsg", &fd, &msgvec, &vlen, &flags) < 0) {
        return NULL;
    }
    int count = receive ? recvmmsg(fd, msgvec, vlen, flags, NULL)
                        : sendmmsg(fd, msgvec, vlen, flags);
    return PyLong_FromLong(count < 0 ? -(long)errno : (long)count);
}

static PyObject *
mmsg_recvmmsg(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return call(args, nargs, 1);
}

static PyObject *
mmsg_sendmmsg(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return call(args, nargs, 0);
}

static PyMethodDef mmsg_methods[] = {
    {"recvmmsg", (PyCFunction)(void (*)(void))mmsg_recvmmsg, METH_FASTCALL,
     "recvmmsg(fd, msgvec, vlen, flags) -> count, or -errno"},
    {"sendmmsg", (PyCFunction)(void (*)(void))mmsg_sendmmsg, METH_FASTCALL,
     "sendmmsg(fd, msgvec, vlen, flags) -> count, or -errno"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mmsg_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "filterd.listeners._mmsgcall",
    .m_doc = "recvmmsg(2) and sendmmsg(2) without ctypes; see filterd.listeners.mmsgcalls.",
    .m_size = 0,
    .m_methods = mmsg_methods,
};

PyMODINIT_FUNC
PyInit__mmsgcall(void)
{
    return PyModule_Create(&mmsg_module);
}
