/* An access-log line cut into its operators' values, and built into its AccessRecord, in C
 * (collector.access_log_lines.TextFormat): what the format's regular expression and its groups give,
 * without a match object, a groups tuple and a Python test per value; then what the generated Python
 * builder does with them, without a str per number, a call per reader, or the id's f-string and hashlib
 * object. The Python split (fullmatch, then "-" and "" read as None) and builder in access_log_lines.py
 * are the reference and the fallback; tests/collector/test_line_split.py compares them (hypothesis).
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
#include <math.h>
#include <stdint.h>
#include <string.h>

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

/* Cut line[from:len] at the literals, as the regex would: the i-th value is line[spans[2i]:spans[2i + 1]].
 * 1 cut, 0 not this format, -1 error. Nothing is allocated: the caller makes the values it needs. */
static int cut(PyObject *literals, Py_ssize_t n, PyObject *line, Py_ssize_t from, Py_ssize_t len,
               Py_ssize_t *spans) {
    PyObject *first = PyTuple_GET_ITEM(literals, 0);
    Py_ssize_t r = PyUnicode_Tailmatch(line, first, from, len, -1);
    if (r <= 0) return (int)r;
    Py_ssize_t pos = from + PyUnicode_GET_LENGTH(first);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *after = PyTuple_GET_ITEM(literals, i + 1);
        Py_ssize_t alen = PyUnicode_GET_LENGTH(after), stop;
        if (alen == 0) { /* the last operator: to the end, without trailing whitespace or a newline in it */
            stop = len;
            while (stop > pos && Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(line, stop - 1))) stop--;
            Py_ssize_t nl = stop > pos ? PyUnicode_FindChar(line, '\n', pos, stop, 1) : -1;
            if (nl == -2) return -1;
            if (nl >= 0) return 0;
            spans[2 * i] = pos, spans[2 * i + 1] = stop;
            return 1;
        }
        stop = PyUnicode_FindChar(line, PyUnicode_READ_CHAR(after, 0), pos, len, 1);
        if (stop == -2) return -1;
        if (stop < 0) return 0;
        r = PyUnicode_Tailmatch(line, after, stop, len, -1);
        if (r <= 0) return (int)r;
        spans[2 * i] = pos, spans[2 * i + 1] = stop;
        pos = stop + alen;
    }
    for (; pos < len; pos++) /* whitespace may follow the last literal */
        if (!Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(line, pos))) return 0;
    return 1;
}

/* "-" or "": what Envoy writes for a value it does not have */
static int blank(PyObject *line, Py_ssize_t start, Py_ssize_t end) {
    return end == start || (end == start + 1 && PyUnicode_READ_CHAR(line, start) == '-');
}

static PyObject *splitter_split(Splitter *self, PyObject *line) {
    if (self->literals == NULL) return PyErr_Format(PyExc_TypeError, "Splitter not initialised");
    if (!PyUnicode_Check(line)) return PyErr_Format(PyExc_TypeError, "split() takes a str");
    Py_ssize_t n = self->n, small[128], *spans = n <= 64 ? small : PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (size_t)n);
    PyObject *out = NULL;
    if (spans == NULL) return PyErr_NoMemory();
    int r = cut(self->literals, n, line, 0, PyUnicode_GET_LENGTH(line), spans);
    if (r == 1 && (out = PyTuple_New(n)) != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = self->blank_none[i] && blank(line, spans[2 * i], spans[2 * i + 1])
                              ? Py_NewRef(Py_None) : PyUnicode_Substring(line, spans[2 * i], spans[2 * i + 1]);
            if (v == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyTuple_SET_ITEM(out, i, v);
        }
    }
    if (spans != small) PyMem_Free(spans);
    if (r == 0) Py_RETURN_NONE;
    return out;
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

/* ---- BLAKE2b (RFC 7693), unkeyed, for the record id: hashlib's blake2b(text, digest_size=16) ------------ */
static const uint64_t B2_IV[8] = {0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
                                  0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
                                  0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};
#define B2_ROTR(x, k) (((x) >> (k)) | ((x) << (64 - (k))))
#define B2_G(r, i, a, b, c, d)                                                                                   \
    do {                                                                                                         \
        a = a + b + m[B2_SIGMA[r][2 * i]]; d = B2_ROTR(d ^ a, 32); c = c + d; b = B2_ROTR(b ^ c, 24);            \
        a = a + b + m[B2_SIGMA[r][2 * i + 1]]; d = B2_ROTR(d ^ a, 16); c = c + d; b = B2_ROTR(b ^ c, 63);        \
    } while (0)

static uint64_t b2_load(const unsigned char *p) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

static void b2_compress(uint64_t h[8], const unsigned char *block, uint64_t t, int last) {
    uint64_t m[16], v[16];
    for (int k = 0; k < 16; k++) m[k] = b2_load(block + 8 * k);
    for (int k = 0; k < 8; k++) v[k] = h[k], v[k + 8] = B2_IV[k];
    v[12] ^= t;
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        B2_G(r, 0, v[0], v[4], v[8], v[12]); B2_G(r, 1, v[1], v[5], v[9], v[13]);
        B2_G(r, 2, v[2], v[6], v[10], v[14]); B2_G(r, 3, v[3], v[7], v[11], v[15]);
        B2_G(r, 4, v[0], v[5], v[10], v[15]); B2_G(r, 5, v[1], v[6], v[11], v[12]);
        B2_G(r, 6, v[2], v[7], v[8], v[13]); B2_G(r, 7, v[3], v[4], v[9], v[14]);
    }
    for (int k = 0; k < 8; k++) h[k] ^= v[k] ^ v[k + 8];
}

/* the 16-byte digest of data as 32 lower-case hex digits (hexdigest()) */
static PyObject *blake2b_16_hex(const unsigned char *data, size_t len) {
    uint64_t h[8];
    unsigned char last[128];
    uint64_t t = 0;
    for (int k = 0; k < 8; k++) h[k] = B2_IV[k];
    h[0] ^= 0x01010000ULL ^ 16;
    for (; len > 128; data += 128, len -= 128) {
        t += 128;
        b2_compress(h, data, t, 0);
    }
    memset(last, 0, sizeof last);
    memcpy(last, data, len);
    b2_compress(h, last, t + len, 1);
    PyObject *hex = PyUnicode_New(32, 127);
    if (hex == NULL) return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(hex);
    for (int k = 0; k < 16; k++) {
        unsigned b = (unsigned)(h[k / 8] >> (8 * (k % 8))) & 0xff;
        out[2 * k] = "0123456789abcdef"[b >> 4];
        out[2 * k + 1] = "0123456789abcdef"[b & 15];
    }
    return hex;
}

/* ---- Builder: a line straight to its AccessRecord ------------------------------------------------------ */
enum { K_SKIP, K_TEXT, K_INT, K_FLOAT, K_CODE, K_FLAGS, K_START };
/* places: where the builder reads and writes the row's special fields */
enum { P_ID, P_START, P_PROTOCOL, P_NODE, P_LOG, P_METHOD, P_VERSION, P_REMOTE, P_UPLOCAL, P_RID, P_PATH, P_N };
#define BUILT 1
#define OTHER 0 /* not this format */
#define DEFER 2 /* a value the fast readers do not take: the Python builder decides (and names the error) */

typedef struct {
    PyObject_HEAD
    PyObject *literals, *defaults, *make, *parse_time, *seconds, *http, *tcp, *comma;
    Py_ssize_t n, nf;
    char *blank_none;
    int *kinds, *slots, *lists, nlists;
    int places[P_N];
    PyObject *kube_head, *kube_node, *kube_log; /* the last "[pod/NAME/CONTAINER] " seen and its proxy */
    Py_UCS1 head[19]; /* the last second seen ("2024-05-01T12:00:00") and its epoch seconds */
    double head_base;
    int head_set;
} Builder;

static void builder_dealloc(Builder *self) {
    Py_XDECREF(self->literals); Py_XDECREF(self->defaults); Py_XDECREF(self->make);
    Py_XDECREF(self->parse_time); Py_XDECREF(self->seconds); Py_XDECREF(self->http);
    Py_XDECREF(self->tcp); Py_XDECREF(self->comma);
    Py_XDECREF(self->kube_head); Py_XDECREF(self->kube_node); Py_XDECREF(self->kube_log);
    PyMem_Free(self->blank_none); PyMem_Free(self->kinds); PyMem_Free(self->slots); PyMem_Free(self->lists);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int int_items(PyObject *tuple, Py_ssize_t n, int *out, Py_ssize_t limit) {
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PyTuple_GET_ITEM(tuple, i));
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v < -1 || v >= limit) {
            PyErr_SetString(PyExc_ValueError, "Builder: a number out of range");
            return -1;
        }
        out[i] = (int)v;
    }
    return 0;
}

static int builder_init(Builder *self, PyObject *args, PyObject *kwds) {
    PyObject *literals, *flags, *kinds, *slots, *defaults, *lists, *places, *make, *parse_time, *seconds;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!OOO!", &PyTuple_Type, &literals, &PyTuple_Type, &flags,
                          &PyTuple_Type, &kinds, &PyTuple_Type, &slots, &PyTuple_Type, &defaults,
                          &PyTuple_Type, &lists, &PyTuple_Type, &places, &make, &parse_time, &PyDict_Type,
                          &seconds))
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(literals) - 1, nf = PyTuple_GET_SIZE(defaults);
    if (n < 1 || PyTuple_GET_SIZE(flags) != n || PyTuple_GET_SIZE(kinds) != n || PyTuple_GET_SIZE(slots) != n
        || PyTuple_GET_SIZE(places) != P_N || nf < 1 || nf > 256 || self->literals != NULL) {
        PyErr_SetString(PyExc_ValueError, "Builder(literals, blank_none, kinds, slots, defaults, lists, places, "
                                          "make, parse_time, seconds): sizes do not agree");
        return -1;
    }
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *lit = PyTuple_GET_ITEM(literals, i);
        if (!PyUnicode_Check(lit) || (i > 0 && i < n && PyUnicode_GET_LENGTH(lit) == 0)) {
            PyErr_SetString(PyExc_ValueError, "literals: str, none empty between two operators");
            return -1;
        }
    }
    self->blank_none = PyMem_Malloc((size_t)n);
    self->kinds = PyMem_Malloc(sizeof(int) * (size_t)n);
    self->slots = PyMem_Malloc(sizeof(int) * (size_t)n);
    self->nlists = (int)PyTuple_GET_SIZE(lists);
    self->lists = PyMem_Malloc(sizeof(int) * (size_t)(self->nlists + 1));
    if (!self->blank_none || !self->kinds || !self->slots || !self->lists) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int t = PyObject_IsTrue(PyTuple_GET_ITEM(flags, i));
        if (t < 0) return -1;
        self->blank_none[i] = (char)t;
    }
    if (int_items(kinds, n, self->kinds, K_START + 1) < 0 || int_items(slots, n, self->slots, nf) < 0
        || int_items(lists, self->nlists, self->lists, nf) < 0 || int_items(places, P_N, self->places, nf) < 0)
        return -1;
    for (int p = 0; p < P_N; p++)
        if (self->places[p] < 0 && p < P_METHOD) {
            PyErr_SetString(PyExc_ValueError, "Builder: the id, start, protocol, node and log places are needed");
            return -1;
        }
    self->http = PyUnicode_InternFromString("HTTP");
    self->tcp = PyUnicode_InternFromString("TCP");
    self->comma = PyUnicode_InternFromString(",");
    if (!self->http || !self->tcp || !self->comma) return -1;
    Py_INCREF(literals); self->literals = literals;
    Py_INCREF(defaults); self->defaults = defaults;
    Py_INCREF(make); self->make = make;
    Py_INCREF(parse_time); self->parse_time = parse_time;
    Py_INCREF(seconds); self->seconds = seconds;
    self->n = n;
    self->nf = nf;
    return 0;
}

/* a ValueError or TypeError is the Python builder's to report (BadLine naming the field): DEFER */
static int defer_or_fail(void) {
    if (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        return DEFER;
    }
    return -1;
}

/* p[0:len] as 1 to 18 ASCII digits → their number in *out; 0: another form, left to int()/float() */
static int ascii_digits(const Py_UCS1 *p, Py_ssize_t len, long long *out) {
    if (len < 1 || len > 18) return 0;
    long long x = 0;
    for (Py_ssize_t k = 0; k < len; k++) {
        if (p[k] < '0' || p[k] > '9') return 0;
        x = x * 10 + (p[k] - '0');
    }
    *out = x;
    return 1;
}

/* START_TIME in Envoy's form ("2024-05-01T12:00:00.123Z": the 24 one-byte characters at p) whose second
 * is already in `seconds`: base + ms / 1000, as parse_start_time's first branch. 1 (in *out), 0 (another
 * form, or a second not seen yet: parse_time reads it and fills `seconds`), -1 */
static int start_fast(Builder *self, const Py_UCS1 *p, double *out) {
    if (p[23] != 'Z' || p[19] != '.' || p[20] < '0' || p[20] > '9' || p[21] < '0' || p[21] > '9' || p[22] < '0'
        || p[22] > '9')
        return 0;
    double ms = (double)((p[20] - '0') * 100 + (p[21] - '0') * 10 + (p[22] - '0'));
    if (!self->head_set || memcmp(self->head, p, 19) != 0) {
        PyObject *head = PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, p, 19);
        if (head == NULL) return -1;
        PyObject *base = PyDict_GetItemWithError(self->seconds, head); /* borrowed */
        Py_DECREF(head);
        if (base == NULL) return PyErr_Occurred() ? -1 : 0;
        if (!PyLong_CheckExact(base)) return 0;
        double b = PyLong_AsDouble(base);
        if (b == -1.0 && PyErr_Occurred()) return -1;
        memcpy(self->head, p, 19);
        self->head_base = b;
        self->head_set = 1;
    }
    *out = self->head_base + ms / 1000;
    return 1;
}

/* a value the fast readers did not take, read as its Python reader does (a new reference, or NULL) */
static PyObject *read_slowly(Builder *self, int kind, PyObject *v) {
    double t;
    PyObject *got = NULL;
    int r;
    switch (kind) {
    case K_INT:
    case K_CODE:
        got = PyLong_FromUnicodeObject(v, 10);
        if (got != NULL && kind == K_CODE && (r = PyObject_Not(got)) != 0)
            Py_SETREF(got, r < 0 ? NULL : Py_NewRef(Py_None));
        return got;
    case K_FLOAT:
        return PyFloat_FromString(v);
    case K_FLAGS:
        return PyUnicode_Split(v, self->comma, -1);
    default: /* K_START */
        if (PyUnicode_IS_ASCII(v) && PyUnicode_GET_LENGTH(v) == 24) {
            r = start_fast(self, PyUnicode_1BYTE_DATA(v), &t);
            if (r) return r < 0 ? NULL : PyFloat_FromDouble(t);
        }
        return PyObject_CallOneArg(self->parse_time, v);
    }
}

/* the value line[a:b] of an operator of this kind in *out (a new reference): 0, DEFER, or -1. Numbers
 * and Envoy's start times are read in place in a one-byte line, without a str for the value. */
static int read_value(Builder *self, int kind, char blank_none, PyObject *line, Py_ssize_t a, Py_ssize_t b,
                      PyObject **out) {
    long long x;
    double t;
    if (blank_none && blank(line, a, b)) {
        if (kind == K_START) return DEFER; /* None: the Python builder's error */
        *out = kind == K_FLAGS ? PyList_New(0) : Py_NewRef(Py_None);
        return *out == NULL ? -1 : 0;
    }
    if (PyUnicode_KIND(line) == PyUnicode_1BYTE_KIND && kind != K_TEXT && kind != K_FLAGS) {
        const Py_UCS1 *p = PyUnicode_1BYTE_DATA(line) + a;
        *out = NULL;
        if (kind == K_START) {
            int r = b - a == 24 ? start_fast(self, p, &t) : 0;
            if (r < 0) return -1;
            if (r) *out = PyFloat_FromDouble(t);
        } else if (ascii_digits(p, b - a, &x)) {
            if (kind == K_FLOAT && x < (1LL << 53)) *out = PyFloat_FromDouble((double)x);
            else if (kind == K_INT || (kind == K_CODE && x)) *out = PyLong_FromLongLong(x);
            else if (kind == K_CODE) *out = Py_NewRef(Py_None); /* 0: no response */
        }
        if (*out != NULL) return 0;
        if (PyErr_Occurred()) return -1;
    }
    PyObject *v = PyUnicode_Substring(line, a, b);
    if (v == NULL || kind == K_TEXT) {
        *out = v;
        return v == NULL ? -1 : 0;
    }
    *out = read_slowly(self, kind, v);
    Py_DECREF(v);
    return *out == NULL ? defer_or_fail() : 0;
}

/* the id text's parts, UTF-8, each followed by \x1e (None as \x1f): record_id("access", …) */
typedef struct {
    char small[1024];
    char *buf;
    size_t len, cap;
} Text;

static int text_add(Text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *grown = PyMem_Malloc(cap);
        if (grown == NULL) return -1;
        memcpy(grown, t->buf, t->len);
        if (t->buf != t->small) PyMem_Free(t->buf);
        t->buf = grown, t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len++] = '\x1e';
    return 0;
}

/* 0, DEFER (not a str: the f-string's format() is Python's), -1 */
static int text_part(Text *t, PyObject *part) {
    Py_ssize_t n;
    if (part == Py_None) return text_add(t, "\x1f", 1);
    if (!PyUnicode_CheckExact(part)) return DEFER;
    const char *s = PyUnicode_AsUTF8AndSize(part, &n);
    if (s == NULL) return defer_or_fail(); /* a lone surrogate: .encode() raises in Python too */
    return text_add(t, s, (size_t)n);
}

/* f"{when:.6f}" into buf (64 bytes), or -1. Written directly when `when` is within 4e-7 of a whole
 * millisecond (Envoy's times): that millisecond with three zeros is then the correctly rounded form, as
 * any other multiple of 1e-6 is at least 6e-7 away (when - floor(when) is exact, the product's error
 * ~1e-13); else Python's own formatting (dtoa, the costly part of the id's text). */
static int format_time(double when, char *buf) {
    if (when >= 1 && when < 9.0e15) {
        double whole = floor(when), frac = (when - whole) * 1000, ms = floor(frac + 0.5);
        if (fabs(frac - ms) < 4e-4)
            return snprintf(buf, 64, "%lld.%03d000", (long long)whole + (ms == 1000), (int)ms % 1000);
    }
    char *s = PyOS_double_to_string(when, 'f', 6, 0, NULL);
    if (s == NULL) return -1;
    size_t n = strlen(s);
    if (n >= 64) { /* a time past any calendar (1e300): the Python builder writes its text */
        PyMem_Free(s);
        PyErr_SetString(PyExc_ValueError, "start time out of range");
        return -1;
    }
    memcpy(buf, s, n + 1);
    PyMem_Free(s);
    return (int)n;
}

static PyObject *record_id(Builder *self, PyObject **row, int *status) {
    Text t = {.buf = NULL, .len = 0, .cap = sizeof t.small};
    t.buf = t.small;
    PyObject *id = NULL;
    const int *pl = self->places;
    double when = PyFloat_AsDouble(row[pl[P_START]]);
    int r = 0, flen;
    char formatted[64];
    if (when == -1.0 && PyErr_Occurred()) goto done;
    if ((flen = format_time(when, formatted)) < 0) {
        r = defer_or_fail();
        goto done;
    }
    if (text_add(&t, "access", 6) < 0) goto done;
    int parts[] = {pl[P_NODE], pl[P_LOG], pl[P_PROTOCOL], -1, pl[P_REMOTE], pl[P_UPLOCAL], pl[P_RID], pl[P_PATH]};
    for (int k = 0; k < 8; k++) {
        r = parts[k] < 0 ? (k == 3 ? text_add(&t, formatted, (size_t)flen) : text_add(&t, "\x1f", 1))
                         : text_part(&t, row[parts[k]]);
        if (r) goto done;
    }
    id = blake2b_16_hex((const unsigned char *)t.buf, t.len);
done:
    if (t.buf != t.small) PyMem_Free(t.buf);
    *status = id != NULL ? BUILT : r == DEFER ? DEFER : -1;
    return id;
}

/* line[from:len] → a new record in *out: BUILT, OTHER, DEFER or -1 */
static int build_one(Builder *self, PyObject *line, Py_ssize_t from, Py_ssize_t len, PyObject *node_id,
                     PyObject *log_name, PyObject **out) {
    PyObject *row[256];
    Py_ssize_t spans[512];
    char set[256];
    Py_ssize_t n = self->n, nf = self->nf, i;
    int status;
    if (n > 256) return DEFER;
    int r = cut(self->literals, n, line, from, len, spans);
    if (r <= 0) return r;
    memset(set, 0, (size_t)nf);
    for (i = 0; i < nf; i++) row[i] = Py_NewRef(PyTuple_GET_ITEM(self->defaults, i));
    for (i = 0; i < n; i++) {
        int s = self->slots[i], kind = self->kinds[i];
        PyObject *got;
        if (kind == K_SKIP || s < 0 || (set[s] && row[s] != Py_None)) continue; /* the first operator set wins */
        status = read_value(self, kind, self->blank_none[i], line, spans[2 * i], spans[2 * i + 1], &got);
        if (status) goto end;
        Py_SETREF(row[s], got);
        set[s] = 1;
    }
    for (i = 0; i < self->nlists; i++) {
        int s = self->lists[i];
        if (!set[s]) {
            PyObject *empty = PyList_New(0);
            if (empty == NULL) { status = -1; goto end; }
            Py_SETREF(row[s], empty);
        }
    }
    const int *pl = self->places;
    if (row[pl[P_START]] == Py_None) { status = DEFER; goto end; } /* BadLine('no start time') */
    int http = 0;
    for (int p = P_METHOD; p <= P_VERSION && !http; p++)
        if (pl[p] >= 0 && (http = PyObject_IsTrue(row[pl[p]])) < 0) { status = -1; goto end; }
    Py_SETREF(row[pl[P_PROTOCOL]], Py_NewRef(http ? self->http : self->tcp));
    Py_SETREF(row[pl[P_NODE]], Py_NewRef(node_id));
    Py_SETREF(row[pl[P_LOG]], Py_NewRef(log_name));
    PyObject *id = record_id(self, row, &status);
    if (id == NULL) goto end;
    Py_SETREF(row[pl[P_ID]], id);
    *out = PyObject_Vectorcall(self->make, row, (size_t)nf, NULL);
    status = *out == NULL ? -1 : BUILT;
end:
    for (i = 0; i < nf; i++) Py_DECREF(row[i]);
    return status;
}

/* 1, 0 (node_id or log_name not a str: Python's f-string formats them), -1 */
static int builder_ready(Builder *self, PyObject *node_id, PyObject *log_name) {
    if (self->literals == NULL) {
        PyErr_SetString(PyExc_TypeError, "Builder not initialised");
        return -1;
    }
    return PyUnicode_CheckExact(node_id) && PyUnicode_CheckExact(log_name);
}

static PyObject *builder_build(Builder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyUnicode_Check(args[0]))
        return PyErr_Format(PyExc_TypeError, "build(line, node_id, log_name)");
    int ready = builder_ready(self, args[1], args[2]);
    if (ready <= 0) return ready < 0 ? NULL : Py_NewRef(Py_NotImplemented);
    PyObject *record = NULL;
    int r = build_one(self, args[0], 0, PyUnicode_GET_LENGTH(args[0]), args[1], args[2], &record);
    if (r == BUILT) return record;
    if (r == OTHER) Py_RETURN_NONE;
    if (r == DEFER) Py_RETURN_NOTIMPLEMENTED;
    return NULL;
}

/* The proxy a "[pod/NAME/CONTAINER] " prefix of line names, as origin_of(head) says (head: the line up to
 * its first "]" and the space after it, start of the rest at *from); the last one kept. 1 (borrowed
 * *node, *log), 0 (not a prefix of that form, or the rest not a "[" line: Python's strip_prefix decides),
 * -1 */
static int kubectl_origin(Builder *self, PyObject *origin_of, PyObject *line, Py_ssize_t len, Py_ssize_t *from,
                          PyObject **node, PyObject **log) {
    Py_ssize_t end = PyUnicode_FindChar(line, ']', 5, len, 1);
    if (end == -2) return -1;
    if (end < 0 || end + 2 >= len || PyUnicode_READ_CHAR(line, end + 1) != ' '
        || PyUnicode_READ_CHAR(line, end + 2) != '[')
        return 0;
    *from = end + 2;
    if (self->kube_head == NULL || PyUnicode_GET_LENGTH(self->kube_head) != *from
        || PyUnicode_Tailmatch(line, self->kube_head, 0, *from, -1) != 1) {
        if (PyErr_Occurred()) return -1;
        PyObject *head = PyUnicode_Substring(line, 0, *from);
        if (head == NULL) return -1;
        PyObject *origin = PyObject_CallOneArg(origin_of, head);
        if (origin == NULL || origin == Py_None) {
            Py_DECREF(head);
            Py_XDECREF(origin);
            return origin == NULL ? -1 : 0;
        }
        PyObject *n = PyObject_GetAttrString(origin, "node_id"), *l = PyObject_GetAttrString(origin, "log_name");
        Py_DECREF(origin);
        if (n == NULL || l == NULL || !PyUnicode_CheckExact(n) || !PyUnicode_CheckExact(l)) {
            Py_DECREF(head);
            Py_XDECREF(n);
            Py_XDECREF(l);
            return PyErr_Occurred() ? -1 : 0;
        }
        Py_XSETREF(self->kube_head, head);
        Py_XSETREF(self->kube_node, n);
        Py_XSETREF(self->kube_log, l);
    }
    *node = self->kube_node, *log = self->kube_log;
    return 1;
}

/* build_many(lines, start, node_id, log_name, out, origin_of=None): records of lines[start:] appended to
 * out, up to the first line it leaves to Python (not starting with "[", an ANSI colour, a prefix other
 * than kubectl's "[pod/NAME/CONTAINER] " that origin_of reads, as strip_prefix says; blank; not this
 * format; DEFER); returns that line's index (len(lines) when none). A line's trailing "\r\n" is not part
 * of it, as LineParser.record's rstrip. */
static PyObject *builder_build_many(Builder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 5 || nargs > 6 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[4]))
        return PyErr_Format(PyExc_TypeError,
                            "build_many(lines: list, start, node_id, log_name, out: list, origin_of=None)");
    PyObject *origin_of = nargs > 5 && args[5] != Py_None ? args[5] : NULL;
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    int ready = builder_ready(self, args[2], args[3]);
    if (ready < 0) return NULL;
    PyObject *lines = args[0];
    if (!ready) return PyLong_FromSsize_t(i);
    for (; i >= 0 && i < PyList_GET_SIZE(lines); i++) {
        PyObject *line = PyList_GET_ITEM(lines, i), *record = NULL, *node = args[2], *log = args[3];
        if (!PyUnicode_CheckExact(line)) break;
        Py_ssize_t len = PyUnicode_GET_LENGTH(line), from = 0;
        if (len < 5 || PyUnicode_READ_CHAR(line, 0) != '[') break;
        Py_ssize_t esc = PyUnicode_FindChar(line, 0x1b, 0, len, 1);
        if (esc == -2) return NULL;
        if (esc >= 0) break;
        while (len > 0) {
            Py_UCS4 c = PyUnicode_READ_CHAR(line, len - 1);
            if (c != '\n' && c != '\r') break;
            len--;
        }
        Py_INCREF(line); /* the list may change under a call into Python (parse_time, origin_of) */
        int r = 1;
        if (PyUnicode_READ_CHAR(line, 1) == 'p' && PyUnicode_READ_CHAR(line, 2) == 'o'
            && PyUnicode_READ_CHAR(line, 3) == 'd' && PyUnicode_READ_CHAR(line, 4) == '/')
            r = origin_of == NULL ? 0 : kubectl_origin(self, origin_of, line, len, &from, &node, &log);
        if (r > 0) {
            Py_INCREF(node), Py_INCREF(log);
            r = build_one(self, line, from, len, node, log, &record);
            Py_DECREF(node), Py_DECREF(log);
        }
        Py_DECREF(line);
        if (r < 0) return NULL;
        if (r != BUILT) break;
        r = PyList_Append(args[4], record);
        Py_DECREF(record);
        if (r < 0) return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef builder_methods[] = {
    {"build", (PyCFunction)(void (*)(void))builder_build, METH_FASTCALL,
     "build(line, node_id, log_name): the record, None (not this format), NotImplemented (ask Python)"},
    {"build_many", (PyCFunction)(void (*)(void))builder_build_many, METH_FASTCALL,
     "build_many(lines, start, node_id, log_name, out, origin_of=None) -> the first line left to Python"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "meshscope.collector._line_split.Builder",
    .tp_basicsize = sizeof(Builder),
    .tp_dealloc = (destructor)builder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Builder(literals, blank_none, kinds, slots, defaults, lists, places, make, parse_time, seconds)",
    .tp_methods = builder_methods,
    .tp_init = (initproc)builder_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_line_split",
                                    "An access-log line cut into its operators' values, in C.", -1, NULL};

PyMODINIT_FUNC PyInit__line_split(void) {
    if (PyType_Ready(&SplitterType) < 0 || PyType_Ready(&BuilderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&SplitterType);
    if (PyModule_AddObject(m, "Splitter", (PyObject *)&SplitterType) < 0) {
        Py_DECREF(&SplitterType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&BuilderType);
    if (PyModule_AddObject(m, "Builder", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(&BuilderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
