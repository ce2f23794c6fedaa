/* recvmmsg(2) and sendmmsg(2) for filterd.listeners.mmsgcalls, without ctypes,
 * the per-datagram copies of filterd.listeners.mmsg.Batch, and the hot loop's
 * epoll_wait(2).
 *
 * Why: a ctypes foreign call costs 5,000-9,000 CPU instructions (argument
 * conversion, a libffi call frame prepared per call), measured with
 * callgrind; a UDP query that wakes the worker alone makes two of them, a
 * third of the worker's user-space work per query at 10k qps. These two
 * functions are the same system calls at the cost of one C function call.
 * ``receive`` and ``stage`` do per datagram what Batch otherwise does with
 * memoryview slices (a slice object, a memoryview and a ``tobytes`` method
 * call per received payload and per address, three slice assignments per
 * answer): at saturation those were about a fifth of the worker's
 * user-space CPU (perf, bench/README.md). ``wait`` is epoll_wait without
 * select.epoll.poll's tuple per event, its bound-method call and its timeout
 * object conversion: about 1,000 of a lone query's 9,800 instructions
 * (bench/wakeup).
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
 *
 * Batch's copies (used where this extension is built; Batch does the same
 * with memoryviews where it is not):
 *   receive(fd, msgvec, vlen, flags, first, last) -> [payload, address, ...]
 *     recvmmsg, then for each datagram received its payload (iov_base,
 *     msg_len) and bytes first..last of its sender's sockaddr (the packed
 *     client address), as bytes; [] when nothing is waiting (EAGAIN,
 *     EINTR); OSError on any other failure.
 *   stage(msgvec, slot, answer, capacity, sender) -> None
 *     copies ``answer`` (at most ``capacity`` octets, the slot's buffer) into
 *     message ``slot``'s buffer and sets its iovec's length, and copies the
 *     destination's sockaddr (SOCKADDR_SIZE octets: the address of a received
 *     message's sockaddr as an int, or a bytes object of that size) into its
 *     name. ``msgvec``'s messages each have one iovec (MessageArrays).
 *
 * The hot loop's wait (filterd.listeners.hotloop), used where this extension
 * is built (select.epoll.poll elsewhere, through mmsgcalls.epoll_waiter):
 *   wait(epfd, timeout, maxevents) -> [fd, flags, ...]
 *     epoll_wait(2) with the GIL released, ``timeout`` in seconds rounded up
 *     to milliseconds (negative: no limit); the ready descriptors and their
 *     event flags as one flat list (no tuple per event, which is what
 *     select.epoll.poll builds); [] after a signal, whose Python handler has
 *     run (its exception, if any, propagates); OSError on any other failure.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* sizeof(struct sockaddr_in6): mmsgcalls.SOCKADDR_SIZE, room for either family. */
#define SOCKADDR_SIZE 28

static int
parse_pointer(PyObject *value, const char *name, const char *what, void **out)
{
    void *address = PyLong_AsVoidPtr(value);
    if (address == NULL && PyErr_Occurred()) {
        return -1;
    }
    if (address == NULL) {
        PyErr_Format(PyExc_ValueError, "%s(): %s is NULL", name, what);
        return -1;
    }
    *out = address;
    return 0;
}

static int
parse_fd(PyObject *value, const char *name, int *out)
{
    long fd = PyLong_AsLong(value);
    if (fd == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s(): invalid file descriptor %ld", name, fd);
        return -1;
    }
    *out = (int)fd;
    return 0;
}

static int
parse(PyObject *const *args, Py_ssize_t nargs, const char *name, int *fd,
      struct mmsghdr **msgvec, unsigned int *vlen, int *flags)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "%s() takes 4 arguments (fd, msgvec, vlen, flags), %zd given",
                     name, nargs);
        return -1;
    }
    void *address;
    if (parse_fd(args[0], name, fd) < 0 || parse_pointer(args[1], name, "msgvec", &address) < 0) {
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
    if (vlen_value < 0 || vlen_value > UIO_MAXIOV) {
        PyErr_Format(PyExc_ValueError, "%s(): vlen %ld outside 0..%d", name, vlen_value, UIO_MAXIOV);
        return -1;
    }
    if (flags_value < INT_MIN || flags_value > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s(): invalid flags %ld", name, flags_value);
        return -1;
    }
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

static PyObject *
mmsg_receive(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError,
                     "receive() takes 6 arguments (fd, msgvec, vlen, flags, first, last), %zd given",
                     nargs);
        return NULL;
    }
    int fd, flags;
    struct mmsghdr *msgvec;
    unsigned int vlen;
    if (parse(args, 4, "receive", &fd, &msgvec, &vlen, &flags) < 0) {
        return NULL;
    }
    Py_ssize_t first = PyLong_AsSsize_t(args[4]);
    if (first == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t last = PyLong_AsSsize_t(args[5]);
    if (last == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (first < 0 || last < first || last > SOCKADDR_SIZE) {
        PyErr_Format(PyExc_ValueError, "receive(): address bytes %zd..%zd outside 0..%d",
                     first, last, SOCKADDR_SIZE);
        return NULL;
    }
    int count = recvmmsg(fd, msgvec, vlen, flags, NULL);
    if (count < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return PyList_New(0);
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(2 * (Py_ssize_t)count);
    if (out == NULL) {
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        const struct msghdr *header = &msgvec[i].msg_hdr;
        PyObject *payload = PyBytes_FromStringAndSize(header->msg_iov->iov_base,
                                                      (Py_ssize_t)msgvec[i].msg_len);
        if (payload == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, 2 * i, payload);
        PyObject *address = PyBytes_FromStringAndSize((const char *)header->msg_name + first,
                                                      last - first);
        if (address == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, 2 * i + 1, address);
    }
    return out;
}

static PyObject *
mmsg_stage(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError,
                     "stage() takes 5 arguments (msgvec, slot, answer, capacity, sender), %zd given",
                     nargs);
        return NULL;
    }
    void *msgvec_address;
    if (parse_pointer(args[0], "stage", "msgvec", &msgvec_address) < 0) {
        return NULL;
    }
    Py_ssize_t slot = PyLong_AsSsize_t(args[1]);
    if (slot == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (slot < 0 || slot >= UIO_MAXIOV) {
        PyErr_Format(PyExc_ValueError, "stage(): slot %zd outside 0..%d", slot, UIO_MAXIOV - 1);
        return NULL;
    }
    if (!PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "stage(): answer must be bytes");
        return NULL;
    }
    Py_ssize_t capacity = PyLong_AsSsize_t(args[3]);
    if (capacity == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[2]);
    if (size > capacity) {
        PyErr_Format(PyExc_ValueError, "stage(): answer of %zd octets, slot of %zd", size,
                     capacity);
        return NULL;
    }
    const char *sender;
    if (PyBytes_Check(args[4])) {
        if (PyBytes_GET_SIZE(args[4]) != SOCKADDR_SIZE) {
            PyErr_Format(PyExc_ValueError, "stage(): sockaddr of %zd octets, not %d",
                         PyBytes_GET_SIZE(args[4]), SOCKADDR_SIZE);
            return NULL;
        }
        sender = PyBytes_AS_STRING(args[4]);
    } else if (parse_pointer(args[4], "stage", "sender", (void **)&sender) < 0) {
        return NULL;
    }
    struct msghdr *header = &((struct mmsghdr *)msgvec_address)[slot].msg_hdr;
    memcpy(header->msg_iov->iov_base, PyBytes_AS_STRING(args[2]), (size_t)size);
    header->msg_iov->iov_len = (size_t)size;
    memcpy(header->msg_name, sender, SOCKADDR_SIZE);
    Py_RETURN_NONE;
}

/* At most this many events per wait (HotLoop asks for 256). */
#define MAX_WAIT_EVENTS 1024

static PyObject *
mmsg_wait(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "wait() takes 3 arguments (epfd, timeout, maxevents), %zd given",
                     nargs);
        return NULL;
    }
    int epfd;
    if (parse_fd(args[0], "wait", &epfd) < 0) {
        return NULL;
    }
    double timeout = PyFloat_AsDouble(args[1]);
    if (timeout == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    long maxevents = PyLong_AsLong(args[2]);
    if (maxevents == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (maxevents < 1 || maxevents > MAX_WAIT_EVENTS) {
        PyErr_Format(PyExc_ValueError, "wait(): maxevents %ld outside 1..%d", maxevents,
                     MAX_WAIT_EVENTS);
        return NULL;
    }
    int milliseconds = -1; /* a negative timeout: until an event */
    if (timeout >= 0) {
        /* Rounded up, as select.epoll.poll does: never wake before the deadline. */
        double rounded = ceil(timeout * 1000.0);
        milliseconds = rounded > INT_MAX ? INT_MAX : (int)rounded;
    }
    struct epoll_event events[MAX_WAIT_EVENTS];
    int count, failure;
    Py_BEGIN_ALLOW_THREADS
    count = epoll_wait(epfd, events, (int)maxevents, milliseconds);
    failure = errno;
    Py_END_ALLOW_THREADS
    if (count < 0) {
        if (failure == EINTR) {
            /* A signal: its Python handler runs now (asyncio's wakes the loop
             * through its own descriptor); the caller waits again. */
            return PyErr_CheckSignals() < 0 ? NULL : PyList_New(0);
        }
        errno = failure;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(2 * (Py_ssize_t)count);
    if (out == NULL) {
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        /* select.epoll registers every descriptor with data.fd = fd. */
        PyObject *fd = PyLong_FromLong(events[i].data.fd);
        if (fd == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, 2 * i, fd);
        PyObject *flags = PyLong_FromUnsignedLong(events[i].events);
        if (flags == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, 2 * i + 1, flags);
    }
    return out;
}

static PyMethodDef mmsg_methods[] = {
    {"recvmmsg", (PyCFunction)(void (*)(void))mmsg_recvmmsg, METH_FASTCALL,
     "recvmmsg(fd, msgvec, vlen, flags) -> count, or -errno"},
    {"sendmmsg", (PyCFunction)(void (*)(void))mmsg_sendmmsg, METH_FASTCALL,
     "sendmmsg(fd, msgvec, vlen, flags) -> count, or -errno"},
    {"receive", (PyCFunction)(void (*)(void))mmsg_receive, METH_FASTCALL,
     "receive(fd, msgvec, vlen, flags, first, last) -> [payload, address, ...]"},
    {"stage", (PyCFunction)(void (*)(void))mmsg_stage, METH_FASTCALL,
     "stage(msgvec, slot, answer, capacity, sender) -> None"},
    {"wait", (PyCFunction)(void (*)(void))mmsg_wait, METH_FASTCALL,
     "wait(epfd, timeout, maxevents) -> [fd, flags, ...]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mmsg_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "filterd.listeners._mmsgcall",
    .m_doc = "recvmmsg(2) and sendmmsg(2) without ctypes, Batch's copies and the hot loop's "
              "epoll_wait(2); see filterd.listeners.mmsgcalls.",
    .m_size = 0,
    .m_methods = mmsg_methods,
};

PyMODINIT_FUNC
PyInit__mmsgcall(void)
{
    return PyModule_Create(&mmsg_module);
}
