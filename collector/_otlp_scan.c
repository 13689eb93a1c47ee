/* An OTLP ExportLogsServiceRequest read in one pass over its protobuf bytes, in C
 * (collector.otlp_records.decode_logs): what the converter needs of each log record — its body text and
 * its attributes' keys and scalar values — without a upb wrapper object per record, body, key-value and
 * value (about 3 µs a record with two attributes). The upb message path in otlp_records.py is the
 * reference and the fallback; tests/collector/test_otlp_scan.py compares them.
 *
 * scan_logs(data) -> list of (resource, entries) per ResourceLogs, or None: the request is malformed or
 *   shaped in a way this scanner leaves to upb (a wrong wire type or a group, a repeated singular
 *   message, scope attributes, invalid UTF-8 in a string it reads or checks); upb then decodes it and
 *   says what is wrong, exactly as without the scanner.
 *   resource: the Resource message's bytes (None when absent), parsed by upb in Python (once a request);
 *   entries: the log records of every ScopeLogs in order, each either
 *     (body, attributes, trace_id, span_id, start, end) — body a str (the string_value), attributes a
 *       tuple of (key, value) with value a str, int, float or bool, or None when unset; ids bytes;
 *       start, end the record's bytes in ``data``;
 *     or the record's bytes, when its body is not a string or an attribute holds an array, a map or
 *       bytes: the converter reads such a record with upb. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define GIVE_UP (-1) /* malformed or unusual: None (no Python error set) */
#define FAILED (-2)  /* a Python error is set (memory) */

typedef struct {
    const uint8_t *p, *end;
} Cur;

static int varint(Cur *c, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && c->p < c->end; shift += 7) {
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return GIVE_UP;
}

/* the next field's number and wire type; GIVE_UP on field 0 or a bad tag */
static int tag(Cur *c, uint32_t *field, int *wt) {
    uint64_t t;
    if (varint(c, &t) < 0 || (t >> 3) == 0 || (t >> 3) > 0x1fffffff) return GIVE_UP;
    *field = (uint32_t)(t >> 3);
    *wt = (int)(t & 7);
    return 0;
}

static int span(Cur *c, Cur *inner) {
    uint64_t n;
    if (varint(c, &n) < 0 || n > (uint64_t)(c->end - c->p)) return GIVE_UP;
    inner->p = c->p;
    inner->end = c->p + n;
    c->p += n;
    return 0;
}

/* a length-delimited field (wire type 2: a string, bytes or a message) */
static int delimited(Cur *c, int wt, Cur *inner) { return wt == 2 ? span(c, inner) : GIVE_UP; }

static int fixed64(Cur *c, uint64_t *out) {
    if (c->end - c->p < 8) return GIVE_UP;
    uint64_t v;
    memcpy(&v, c->p, 8); /* little-endian hosts (x86, arm64) */
    c->p += 8;
    *out = v;
    return 0;
}

static int skip(Cur *c, int wt) {
    uint64_t v;
    Cur s;
    switch (wt) {
    case 0: return varint(c, &v);
    case 1: return fixed64(c, &v);
    case 2: return span(c, &s);
    case 5:
        if (c->end - c->p < 4) return GIVE_UP;
        c->p += 4;
        return 0;
    default: return GIVE_UP; /* groups (3, 4) and unknown wire types: upb's to judge */
    }
}

/* a str of valid UTF-8 (upb refuses a proto3 string that is not); GIVE_UP when it is not */
static PyObject *text(Cur s, int *rc) {
    PyObject *o = PyUnicode_DecodeUTF8((const char *)s.p, s.end - s.p, NULL);
    if (o == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            *rc = GIVE_UP;
        } else {
            *rc = FAILED;
        }
    }
    return o;
}

/* a string field this scanner does not keep, checked as upb checks it */
static int check_text(Cur *c, int wt) {
    Cur s;
    int rc = 0;
    if (delimited(c, wt, &s) < 0) return GIVE_UP;
    PyObject *o = text(s, &rc);
    Py_XDECREF(o);
    return rc;
}

/* attribute keys repeat on every record: one str per distinct key within a request */
typedef struct {
    PyObject *keys[16];
    int n;
} Keys;

static PyObject *key_text(Keys *k, Cur s, int *rc) {
    Py_ssize_t len = s.end - s.p;
    for (int i = 0; i < k->n; i++) {
        PyObject *o = k->keys[i];
        if (PyUnicode_GET_LENGTH(o) == len && memcmp(PyUnicode_DATA(o), s.p, (size_t)len) == 0) {
            Py_INCREF(o);
            return o;
        }
    }
    PyObject *o = text(s, rc);
    if (o != NULL && k->n < 16 && PyUnicode_IS_COMPACT_ASCII(o)) {
        Py_INCREF(o);
        k->keys[k->n++] = o;
    }
    return o;
}

enum { UNSET, SCALAR, COMPLEX };

/* an AnyValue: *out a new str/int/float/bool (SCALAR), or NULL (UNSET, COMPLEX: an array, map or
 * bytes, which upb reads) */
static int any_value(Cur c, PyObject **out, int *kind) {
    *out = NULL;
    *kind = UNSET;
    while (c.p < c.end) {
        uint32_t field;
        int wt, rc = 0;
        uint64_t v;
        Cur s;
        if (tag(&c, &field, &wt) < 0) goto give_up;
        PyObject *got = NULL;
        switch (field) {
        case 1: /* string_value */
            if (delimited(&c, wt, &s) < 0) goto give_up;
            if ((got = text(s, &rc)) == NULL) goto fail;
            break;
        case 2: /* bool_value */
            if (wt != 0 || varint(&c, &v) < 0) goto give_up;
            got = PyBool_FromLong(v != 0);
            break;
        case 3: /* int_value */
            if (wt != 0 || varint(&c, &v) < 0) goto give_up;
            if ((got = PyLong_FromLongLong((long long)(int64_t)v)) == NULL) goto fail_memory;
            break;
        case 4: { /* double_value */
            double d;
            if (wt != 1 || fixed64(&c, &v) < 0) goto give_up;
            memcpy(&d, &v, 8);
            if ((got = PyFloat_FromDouble(d)) == NULL) goto fail_memory;
            break;
        }
        case 5: case 6: case 7: /* array_value, kvlist_value, bytes_value */
            if (delimited(&c, wt, &s) < 0) goto give_up;
            *kind = COMPLEX;
            continue;
        default:
            if (skip(&c, wt) < 0) goto give_up;
            continue;
        }
        Py_XSETREF(*out, got); /* a oneof: the last one on the wire wins */
        if (*kind != COMPLEX) *kind = SCALAR;
        continue;
    fail:
        Py_CLEAR(*out);
        return rc;
    }
    if (*kind == COMPLEX) Py_CLEAR(*out);
    return 0;
give_up:
    Py_CLEAR(*out);
    return GIVE_UP;
fail_memory:
    Py_CLEAR(*out);
    return FAILED;
}

/* a KeyValue as (key, value or None); *kind COMPLEX when the record must go to upb */
static int key_value(Cur c, Keys *keys, PyObject **pair, int *kind) {
    PyObject *key = NULL, *value = NULL;
    int seen_value = 0, rc = GIVE_UP;
    *kind = UNSET;
    while (c.p < c.end) {
        uint32_t field;
        int wt;
        Cur s;
        if (tag(&c, &field, &wt) < 0) goto out;
        if (field == 1) {
            if (delimited(&c, wt, &s) < 0) goto out;
            Py_CLEAR(key);
            int r = 0;
            if ((key = key_text(keys, s, &r)) == NULL) {
                rc = r;
                goto out;
            }
        } else if (field == 2) {
            if (delimited(&c, wt, &s) < 0 || seen_value) goto out; /* a repeated message merges */
            seen_value = 1;
            int r = any_value(s, &value, kind);
            if (r < 0) {
                rc = r;
                goto out;
            }
        } else if (skip(&c, wt) < 0) {
            goto out;
        }
    }
    if (key == NULL) key = PyUnicode_FromStringAndSize("", 0);
    if (key == NULL) {
        rc = FAILED;
        goto out;
    }
    *pair = PyTuple_Pack(2, key, value != NULL ? value : Py_None);
    rc = *pair != NULL ? 0 : FAILED;
out:
    Py_XDECREF(key);
    Py_XDECREF(value);
    return rc;
}

/* one LogRecord: its entry (a tuple, or its bytes for upb) in *entry */
static int log_record(Cur c, const uint8_t *base, Keys *keys, PyObject **entry) {
    PyObject *body = NULL, *attrs = PyList_New(0);
    Cur trace = {c.p, c.p}, span_id = {c.p, c.p};
    const uint8_t *start = c.p, *end = c.end;
    int complex = 0, body_seen = 0, rc = GIVE_UP;
    *entry = NULL;
    if (attrs == NULL) return FAILED;
    while (c.p < c.end) {
        uint32_t field;
        int wt, kind, r;
        Cur s;
        uint64_t v;
        if (tag(&c, &field, &wt) < 0) goto out;
        switch (field) {
        case 1: case 11: /* time_unix_nano, observed_time_unix_nano: read by upb when needed */
            if (wt != 1 || fixed64(&c, &v) < 0) goto out;
            break;
        case 3: case 12: /* severity_text, event_name */
            if ((r = check_text(&c, wt)) < 0) {
                rc = r;
                goto out;
            }
            break;
        case 5: { /* body */
            PyObject *value;
            if (delimited(&c, wt, &s) < 0 || body_seen) goto out;
            body_seen = 1;
            if ((r = any_value(s, &value, &kind)) < 0) {
                rc = r;
                goto out;
            }
            if (value != NULL && PyUnicode_Check(value)) {
                body = value;
            } else {
                Py_XDECREF(value);
                complex = 1;
            }
            break;
        }
        case 6: { /* attributes */
            PyObject *pair = NULL;
            if (delimited(&c, wt, &s) < 0) goto out;
            if ((r = key_value(s, keys, &pair, &kind)) < 0) {
                rc = r;
                goto out;
            }
            if (kind == COMPLEX) complex = 1;
            r = PyList_Append(attrs, pair);
            Py_DECREF(pair);
            if (r < 0) {
                rc = FAILED;
                goto out;
            }
            break;
        }
        case 9: /* trace_id */
            if (delimited(&c, wt, &trace) < 0) goto out;
            break;
        case 10: /* span_id */
            if (delimited(&c, wt, &span_id) < 0) goto out;
            break;
        default:
            if (skip(&c, wt) < 0) goto out;
        }
    }
    if (complex || body == NULL) {
        *entry = PyBytes_FromStringAndSize((const char *)start, end - start);
    } else {
        PyObject *pairs = PyList_AsTuple(attrs);
        *entry = pairs == NULL ? NULL
                               : Py_BuildValue("(NNy#y#nn)", (Py_INCREF(body), body), pairs,
                                               (const char *)trace.p, (Py_ssize_t)(trace.end - trace.p),
                                               (const char *)span_id.p, (Py_ssize_t)(span_id.end - span_id.p),
                                               (Py_ssize_t)(start - base), (Py_ssize_t)(end - base));
    }
    rc = *entry != NULL ? 0 : FAILED;
out:
    Py_XDECREF(body);
    Py_DECREF(attrs);
    return rc;
}

/* an InstrumentationScope: its name and version checked; attributes left to upb */
static int scope(Cur c) {
    while (c.p < c.end) {
        uint32_t field;
        int wt, r;
        if (tag(&c, &field, &wt) < 0) return GIVE_UP;
        if (field == 1 || field == 2) {
            if ((r = check_text(&c, wt)) < 0) return r;
        } else if (field == 3) {
            return GIVE_UP;
        } else if (skip(&c, wt) < 0) {
            return GIVE_UP;
        }
    }
    return 0;
}

static int scope_logs(Cur c, const uint8_t *base, Keys *keys, PyObject *entries) {
    int scope_seen = 0;
    while (c.p < c.end) {
        uint32_t field;
        int wt, r;
        Cur s;
        if (tag(&c, &field, &wt) < 0) return GIVE_UP;
        if (field == 1) {
            if (delimited(&c, wt, &s) < 0 || scope_seen) return GIVE_UP;
            scope_seen = 1;
            if ((r = scope(s)) < 0) return r;
        } else if (field == 2) {
            PyObject *entry;
            if (delimited(&c, wt, &s) < 0) return GIVE_UP;
            if ((r = log_record(s, base, keys, &entry)) < 0) return r;
            r = PyList_Append(entries, entry);
            Py_DECREF(entry);
            if (r < 0) return FAILED;
        } else if (field == 3) {
            if ((r = check_text(&c, wt)) < 0) return r;
        } else if (skip(&c, wt) < 0) {
            return GIVE_UP;
        }
    }
    return 0;
}

static int resource_logs(Cur c, const uint8_t *base, Keys *keys, PyObject **out) {
    Cur resource = {NULL, NULL};
    PyObject *entries = PyList_New(0);
    int rc = 0;
    *out = NULL;
    if (entries == NULL) return FAILED;
    while (c.p < c.end && rc == 0) {
        uint32_t field;
        int wt;
        Cur s;
        if (tag(&c, &field, &wt) < 0) {
            rc = GIVE_UP;
        } else if (field == 1) {
            if (delimited(&c, wt, &s) < 0 || resource.p != NULL) rc = GIVE_UP;
            else resource = s;
        } else if (field == 2) {
            if (delimited(&c, wt, &s) < 0) rc = GIVE_UP;
            else rc = scope_logs(s, base, keys, entries);
        } else if (field == 3) {
            rc = check_text(&c, wt);
        } else if (skip(&c, wt) < 0) {
            rc = GIVE_UP;
        }
    }
    if (rc == 0) {
        PyObject *res = resource.p == NULL
                            ? Py_NewRef(Py_None)
                            : PyBytes_FromStringAndSize((const char *)resource.p, resource.end - resource.p);
        *out = res == NULL ? NULL : PyTuple_Pack(2, res, entries);
        Py_XDECREF(res);
        if (*out == NULL) rc = FAILED;
    }
    Py_DECREF(entries);
    return rc;
}

/* the request: every ResourceLogs (field 1) appended to ``out`` */
static int request(Cur c, const uint8_t *base, Keys *keys, PyObject *out) {
    while (c.p < c.end) {
        uint32_t field;
        int wt, r;
        Cur s;
        PyObject *one = NULL;
        if (tag(&c, &field, &wt) < 0) return GIVE_UP;
        if (field != 1) {
            if (skip(&c, wt) < 0) return GIVE_UP;
            continue;
        }
        if (delimited(&c, wt, &s) < 0) return GIVE_UP;
        if ((r = resource_logs(s, base, keys, &one)) < 0) return r;
        r = PyList_Append(out, one);
        Py_DECREF(one);
        if (r < 0) return FAILED;
    }
    return 0;
}

static PyObject *scan_logs(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Cur c = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    Keys keys = {.n = 0};
    PyObject *out = PyList_New(0);
    int rc = out == NULL ? FAILED : request(c, c.p, &keys, out);
    for (int i = 0; i < keys.n; i++) Py_DECREF(keys.keys[i]);
    PyBuffer_Release(&view);
    if (rc == 0) return out;
    Py_XDECREF(out);
    if (rc == FAILED) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan_logs", scan_logs, METH_O, "an ExportLogsServiceRequest's resources and log entries, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_otlp_scan",
    .m_doc = "An OTLP ExportLogsServiceRequest read in one pass, in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__otlp_scan(void) { return PyModule_Create(&module); }
