/* A slots record's fields as a row and back, in C (meshscope.model.rows): the collector builds an
 * AccessRecord for every entry it takes and the bus's write-ahead log reads every one back as a row.
 * In Python both are one attribute store or load per field (46 for an AccessRecord, about 3 µs each
 * way); here they are one pointer copy per field. The Python in rows.py stays the reference and the
 * fallback (tests/model/test_rows.py compares them).
 *
 * Layout(cls, names, acyclic=False): the slot offsets of cls's fields, each checked to be a slot
 *   (member descriptor of an object field) found on cls. acyclic: the records make() builds are not
 *   tracked by the garbage collector (a record whose fields are atoms and lists of atoms is never part
 *   of a reference cycle; reference counting frees it, and the collector's young collections, which
 *   visit every field of every surviving record, cost the import path about a tenth of its CPU);
 *   nor are the lists of str among its fields (a str appended later keeps them acyclic).
 * Layout.make(*row) -> a new cls whose fields are the arguments, in names' order (no __init__ run;
 *   positional, so a caller with the values at hand builds no tuple for them).
 * Layout.rows(records) -> [tuple of fields, ...]; TypeError for a record that is not exactly cls,
 *   AttributeError for a field never set (as operator.attrgetter).
 * Layout.widest(records, fields) -> the largest total length of the fields (indexes into names) in
 *   one record, each a str or None (0); TypeError for another value or a record not exactly cls (the
 *   collector's intake asks it of every batch: in Python, 15 loads and lengths per record cost
 *   about 1.5 µs). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    Py_ssize_t n;
    Py_ssize_t *offsets;
    PyObject *names; /* tuple of str, for error messages */
    int acyclic;     /* made records are left out of the garbage collector's generations */
} Layout;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static void layout_dealloc(Layout *self) {
    Py_XDECREF(self->cls);
    Py_XDECREF(self->names);
    PyMem_Free(self->offsets);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int layout_init(Layout *self, PyObject *args, PyObject *kwds) {
    PyObject *cls, *names;
    int acyclic = 0;
    if (!PyArg_ParseTuple(args, "O!O|p", &PyType_Type, &cls, &names, &acyclic)) return -1;
    PyObject *tuple = PySequence_Tuple(names);
    if (tuple == NULL) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    Py_ssize_t *offsets = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    if (offsets == NULL) {
        Py_DECREF(tuple);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(tuple, i);
        PyObject *descr = PyObject_GetAttr(cls, name);
        if (descr == NULL) goto fail;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type)
                 && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX
                 && PyType_IsSubtype((PyTypeObject *)cls, PyDescr_TYPE(descr));
        if (ok) offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%R is not a slot of %R", name, cls);
            goto fail;
        }
    }
    Py_INCREF(cls);
    Py_XSETREF(self->cls, (PyTypeObject *)cls);
    Py_XSETREF(self->names, tuple);
    PyMem_Free(self->offsets);
    self->offsets = offsets;
    self->n = n;
    self->acyclic = acyclic;
    return 0;
fail:
    Py_DECREF(tuple);
    PyMem_Free(offsets);
    return -1;
}

/* A list holding only str (an acyclic record's notes, response flags) can never be in a cycle: left
 * untracked, the young collections do not visit it (two per AccessRecord; 0.5 µs a record imported). */
static void untrack_text_list(PyObject *v) {
    if (!PyList_CheckExact(v) || !PyObject_GC_IsTracked(v)) return;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(v); k++)
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(v, k))) return;
    PyObject_GC_UnTrack(v);
}

static PyObject *layout_make(Layout *self, PyObject *const *args, Py_ssize_t nargs) {
    if (self->cls == NULL) return PyErr_Format(PyExc_TypeError, "Layout not initialised");
    if (nargs != self->n)
        return PyErr_Format(PyExc_TypeError, "make() takes the %zd fields, not %zd values", self->n, nargs);
    PyObject *obj = self->cls->tp_alloc(self->cls, 0);
    if (obj == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *v = args[i];
        Py_INCREF(v);
        SLOT(obj, self->offsets[i]) = v; /* freshly allocated: every slot is NULL */
    }
    if (self->acyclic) {
        if (PyObject_IS_GC(obj)) PyObject_GC_UnTrack(obj);
        for (Py_ssize_t i = 0; i < nargs; i++) untrack_text_list(args[i]);
    }
    return obj;
}

static PyObject *layout_rows(Layout *self, PyObject *records) {
    if (self->cls == NULL) return PyErr_Format(PyExc_TypeError, "Layout not initialised");
    PyObject *seq = PySequence_Fast(records, "rows() takes a sequence of records");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *out = PyList_New(count);
    if (out == NULL) goto fail;
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *obj = items[j];
        if (!Py_IS_TYPE(obj, self->cls)) {
            PyErr_Format(PyExc_TypeError, "rows() of %s records got a %s", self->cls->tp_name,
                         Py_TYPE(obj)->tp_name);
            goto fail;
        }
        PyObject *row = PyTuple_New(self->n);
        if (row == NULL) goto fail;
        PyList_SET_ITEM(out, j, row);
        for (Py_ssize_t i = 0; i < self->n; i++) {
            PyObject *v = SLOT(obj, self->offsets[i]);
            if (v == NULL) {
                PyErr_Format(PyExc_AttributeError, "%s record has no %R", self->cls->tp_name,
                             PyTuple_GET_ITEM(self->names, i));
                goto fail;
            }
            Py_INCREF(v);
            PyTuple_SET_ITEM(row, i, v);
        }
    }
    Py_DECREF(seq);
    return out;
fail:
    Py_XDECREF(out);
    Py_DECREF(seq);
    return NULL;
}

static PyObject *layout_widest(Layout *self, PyObject *const *args, Py_ssize_t nargs) {
    if (self->cls == NULL) return PyErr_Format(PyExc_TypeError, "Layout not initialised");
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "widest() takes records and field indexes");
    PyObject *seq = PySequence_Fast(args[0], "widest() takes a sequence of records");
    if (seq == NULL) return NULL;
    PyObject *fields = PySequence_Fast(args[1], "widest() takes a sequence of field indexes");
    if (fields == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t nf = PySequence_Fast_GET_SIZE(fields), widest = 0;
    Py_ssize_t *offsets = PyMem_Calloc(nf ? nf : 1, sizeof(Py_ssize_t));
    if (offsets == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t k = 0; k < nf; k++) {
        Py_ssize_t i = PyNumber_AsSsize_t(PySequence_Fast_GET_ITEM(fields, k), PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) goto fail;
        if (i < 0 || i >= self->n) {
            PyErr_Format(PyExc_IndexError, "field index %zd out of range", i);
            goto fail;
        }
        offsets[k] = self->offsets[i];
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *obj = items[j];
        if (!Py_IS_TYPE(obj, self->cls)) {
            PyErr_Format(PyExc_TypeError, "widest() of %s records got a %s", self->cls->tp_name,
                         Py_TYPE(obj)->tp_name);
            goto fail;
        }
        Py_ssize_t total = 0;
        for (Py_ssize_t k = 0; k < nf; k++) {
            PyObject *v = SLOT(obj, offsets[k]);
            if (v == NULL) {
                PyErr_Format(PyExc_AttributeError, "%s record has a field never set", self->cls->tp_name);
                goto fail;
            }
            if (v == Py_None) continue;
            if (!PyUnicode_Check(v)) {
                PyErr_Format(PyExc_TypeError, "widest() found a %s, not a str", Py_TYPE(v)->tp_name);
                goto fail;
            }
            total += PyUnicode_GET_LENGTH(v);
        }
        if (total > widest) widest = total;
    }
    PyMem_Free(offsets);
    Py_DECREF(fields);
    Py_DECREF(seq);
    return PyLong_FromSsize_t(widest);
fail:
    PyMem_Free(offsets);
    Py_DECREF(fields);
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef layout_methods[] = {
    {"make", (PyCFunction)(void (*)(void))layout_make, METH_FASTCALL,
     "make(*row): a new record of the fields given in the names' order"},
    {"rows", (PyCFunction)layout_rows, METH_O, "the records' fields as tuples, in the names' order"},
    {"widest", (PyCFunction)(void (*)(void))layout_widest, METH_FASTCALL,
     "widest(records, fields): the largest total length of the str fields (indexes) in one record"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LayoutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "meshscope.model._record_slots.Layout",
    .tp_basicsize = sizeof(Layout),
    .tp_dealloc = (destructor)layout_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Layout(cls, names): a slots record's fields by offset (make a record, read rows)",
    .tp_methods = layout_methods,
    .tp_init = (initproc)layout_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_record_slots",
                                    "A slots record's fields as rows and back, in C.", -1, NULL};

PyMODINIT_FUNC PyInit__record_slots(void) {
    if (PyType_Ready(&LayoutType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&LayoutType);
    if (PyModule_AddObject(m, "Layout", (PyObject *)&LayoutType) < 0) {
        Py_DECREF(&LayoutType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
