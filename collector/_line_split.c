/* An access-log line cut into its operators' values, in C (collector.access_log_lines.TextFormat): what
 * the format's regular expression and its groups give, without a match object, a groups tuple and a
 * Python test per value. The Python split in access_log_lines.py (fullmatch, then "-" and "" read as
 * None) is the reference and the fallback; tests/collector/test_line_split.py compares them.
 *
 * A format is literal text around operators: literals[0] OP literals[1] OP … literals[n]. Each
 * operator's value runs to the first character of the literal after it (the regex's ([^c]*)), the last
 * one, when no literal follows, to the end of the line without trailing whitespace ((.*?) then \s*, so
 * without a newline inside); whitespace may follow the last literal.
 *
 * Splitter(literals, blank_none) ; Splitter.split(line) -> tuple of values, or None (not this format).
 * blank_none[i]: the i-th value is None when it is "-" or "" (what Envoy writes for "not set"). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject_HEAD
    PyObject *literals; /* tuple of str, n + 1 */
    Py_ssize_t n;       /* operators */
    char *blank_none;   /* n flags */
} Splitter;

static void splitter_dealloc(Splitter *self) {
    Py_XDECREF(self->literals);
    PyMem_Free(self->blank_none);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int splitter_init(Splitter *self, PyObject *args, PyObject *kwds) {
    PyObject *literals, *flags;
    if (!PyArg_ParseTuple(args, "O!O!", &PyTuple_Type, &literals, &PyTuple_Type, &flags)) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(literals) - 1;
    if (n < 1 || PyTuple_GET_SIZE(flags) != n) {
        PyErr_SetString(PyExc_ValueError, "Splitter(literals, blank_none): n + 1 literals, n flags, n >= 1");
        return -1;
    }
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *lit = PyTuple_GET_ITEM(literals, i);
        if (!PyUnicode_Check(lit)) {
            PyErr_SetString(PyExc_TypeError, "literals are str");
            return -1;
        }
        if (i > 0 && i < n && PyUnicode_GET_LENGTH(lit) == 0) {
            PyErr_SetString(PyExc_ValueError, "two operators without text between them");
            return -1;
        }
    }
    char *blank_none = PyMem_Malloc((size_t)n);
    if (blank_none == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int t = PyObject_IsTrue(PyTuple_GET_ITEM(flags, i));
        if (t < 0) {
            PyMem_Free(blank_none);
            return -1;
        }
        blank_none[i] = (char)t;
    }
    Py_INCREF(literals);
    Py_XSETREF(self->literals, literals);
    PyMem_Free(self->blank_none);
    self->blank_none = blank_none;
    self->n = n;
    return 0;
}

/* line[start:end] as a value: None for "-" and "" when the operator says so */
static PyObject *value(Splitter *self, Py_ssize_t i, PyObject *line, Py_ssize_t start, Py_ssize_t end) {
    if (self->blank_none[i]
        && (end == start || (end == start + 1 && PyUnicode_READ_CHAR(line, start) == '-')))
        Py_RETURN_NONE;
    return PyUnicode_Substring(line, start, end);
}

static PyObject *splitter_split(Splitter *self, PyObject *line) {
    if (self->literals == NULL) return PyErr_Format(PyExc_TypeError, "Splitter not initialised");
    if (!PyUnicode_Check(line)) return PyErr_Format(PyExc_TypeError, "split() takes a str");
    Py_ssize_t len = PyUnicode_GET_LENGTH(line), n = self->n;
    PyObject *first = PyTuple_GET_ITEM(self->literals, 0);
    Py_ssize_t r = PyUnicode_Tailmatch(line, first, 0, len, -1);
    if (r < 0) return NULL;
    if (!r) Py_RETURN_NONE;
    Py_ssize_t pos = PyUnicode_GET_LENGTH(first);
    PyObject *out = PyTuple_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *after = PyTuple_GET_ITEM(self->literals, i + 1);
        Py_ssize_t alen = PyUnicode_GET_LENGTH(after), stop;
        if (alen == 0) { /* the last operator: to the end, without trailing whitespace or a newline in it */
            stop = len;
            while (stop > pos && Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(line, stop - 1))) stop--;
            Py_ssize_t nl = stop > pos ? PyUnicode_FindChar(line, '\n', pos, stop, 1) : -1;
            if (nl == -2) goto fail;
            if (nl >= 0) goto other;
            PyObject *v = value(self, i, line, pos, stop);
            if (v == NULL) goto fail;
            PyTuple_SET_ITEM(out, i, v);
            return out;
        }
        stop = PyUnicode_FindChar(line, PyUnicode_READ_CHAR(after, 0), pos, len, 1);
        if (stop == -2) goto fail;
        if (stop < 0) goto other;
        r = PyUnicode_Tailmatch(line, after, stop, len, -1);
        if (r < 0) goto fail;
        if (!r) goto other;
        PyObject *v = value(self, i, line, pos, stop);
        if (v == NULL) goto fail;
        PyTuple_SET_ITEM(out, i, v);
        pos = stop + alen;
    }
    for (; pos < len; pos++) /* whitespace may follow the last literal */
        if (!Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(line, pos))) goto other;
    return out;
other:
    Py_DECREF(out);
    Py_RETURN_NONE;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef splitter_methods[] = {
    {"split", (PyCFunction)splitter_split, METH_O, "the operators' values of a line, or None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SplitterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "meshscope.collector._line_split.Splitter",
    .tp_basicsize = sizeof(Splitter),
    .tp_dealloc = (destructor)splitter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Splitter(literals, blank_none): an Envoy text format's line cut into its values",
    .tp_methods = splitter_methods,
    .tp_init = (initproc)splitter_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_line_split",
                                    "An access-log line cut into its operators' values, in C.", -1, NULL};

PyMODINIT_FUNC PyInit__line_split(void) {
    if (PyType_Ready(&SplitterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&SplitterType);
    if (PyModule_AddObject(m, "Splitter", (PyObject *)&SplitterType) < 0) {
        Py_DECREF(&SplitterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
