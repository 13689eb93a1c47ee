/* An HTTP/1 head's lines in C (decoders.http1.parse_head): the start line and the header fields of a
 * well-formed head, as parse_head's Python loop makes them (names lower-cased, values stripped), in one
 * call instead of a few per line. Anything else — a folded line, a line without a field name, a name
 * ending in a blank, a repeated field, a non-ASCII name — answers None, and the Python loop (the
 * reference: tests/decoders/test_http1.py compares) reads the head as it always did.
 *
 * fields(raw) -> (start line without its CR, {name: value}) or None */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* str.isspace() of the Latin-1 characters: what str.strip() removes */
static inline int blank(unsigned char c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0;
}

static PyObject *fields(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const char *raw = view.buf;
    Py_ssize_t n = view.len;
    const unsigned char *s = (const unsigned char *)raw;
    const unsigned char *nl = memchr(s, '\n', (size_t)n);
    Py_ssize_t line_end = nl ? nl - s : n;
    Py_ssize_t start_len = line_end;
    while (start_len > 0 && s[start_len - 1] == '\r') start_len--; /* rstrip("\r") */
    PyObject *headers = PyDict_New();
    if (headers == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    char lower[256];
    Py_ssize_t pos = nl ? line_end + 1 : n;
    while (nl != NULL) {
        nl = memchr(s + pos, '\n', (size_t)(n - pos));
        Py_ssize_t end = nl ? nl - s : n;
        const unsigned char *colon = memchr(s + pos, ':', (size_t)(end - pos));
        Py_ssize_t name_len = colon ? colon - (s + pos) : 0;
        if (name_len == 0 || name_len > (Py_ssize_t)sizeof(lower) || s[pos] == ' ' || s[pos] == '\t'
            || s[pos + name_len - 1] == ' ' || s[pos + name_len - 1] == '\t')
            goto other;
        for (Py_ssize_t i = 0; i < name_len; i++) {
            unsigned char c = s[pos + i];
            if (c >= 0x80) goto other;
            lower[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        Py_ssize_t v = pos + name_len + 1, v_end = end;
        while (v < v_end && blank(s[v])) v++;
        while (v_end > v && blank(s[v_end - 1])) v_end--;
        PyObject *name = PyUnicode_DecodeASCII(lower, name_len, NULL);
        if (name == NULL) goto fail;
        int seen = PyDict_Contains(headers, name);
        PyObject *value = seen == 0 ? PyUnicode_DecodeLatin1((const char *)s + v, v_end - v, NULL) : NULL;
        if (value == NULL || PyDict_SetItem(headers, name, value) < 0) {
            Py_DECREF(name);
            Py_XDECREF(value);
            if (seen > 0) goto other; /* a repeated field: joined by the Python loop */
            goto fail;
        }
        Py_DECREF(name);
        Py_DECREF(value);
        pos = end + 1;
    }
    PyObject *start = PyUnicode_DecodeLatin1(raw, start_len, NULL);
    if (start == NULL) goto fail;
    PyBuffer_Release(&view);
    return Py_BuildValue("NN", start, headers);
other:
    Py_DECREF(headers);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    Py_DECREF(headers);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"fields", fields, METH_O, "(start line, header fields) of a well-formed head, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_http1_head", NULL, -1, methods};

PyMODINIT_FUNC PyInit__http1_head(void) { return PyModule_Create(&module); }
