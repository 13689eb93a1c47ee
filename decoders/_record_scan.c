/* The pcap reader's skip test in C (decoders.capture_file): walks the records of one window of a
 * pcap file and says which to read, so that Python runs once per wanted record, not once per record.
 *
 * On a capture of an Ethernet / Linux cooked link layer, most records are other shards' connections
 * or pure ACKs, which the decoder drops from their headers alone (the same test as the Python loop in
 * capture_file._read_pcap, which stays the reference and the fallback). This module only decides;
 * all cutting, reporting and damage handling stays in Python.
 *
 * scan(buf, pos, end, big_endian, ethertype_at, ip_at, index, count)
 *   -> (records, pos, packets, nbytes)
 * records: the start offsets of the records to read, in order: pos for an IPv4/TCP frame of this
 * shard that is not a pure ACK (to be cut), ~pos (negative) for any other frame (to be yielded whole).
 * It stops at the first record not wholly inside buf[:end] or claiming more than max_record bytes,
 * and returns its offset: the Python loop deals with that one (refilling its window, reporting damage). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define IPV4_TCP_MIN 40
#define MAX_RECORD (1u << 20)
#define CONTROL 0x07 /* FIN | SYN | RST */
#define IP_FRAGMENTED 0x3FFF

static inline uint32_t rd32(const unsigned char *p, int big) {
    return big ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]
               : ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static inline unsigned be16(const unsigned char *p) { return ((unsigned)p[0] << 8) | p[1]; }

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, end, et_at, ip_at, index, count;
    int big;
    if (!PyArg_ParseTuple(args, "y*nnpnnnn", &view, &pos, &end, &big, &et_at, &ip_at, &index, &count))
        return NULL;
    if (end > view.len) end = view.len;
    if (count < 1) count = 1;
    const unsigned char *buf = view.buf;
    Py_ssize_t min_len = ip_at + IPV4_TCP_MIN;
    long long packets = 0, nbytes = 0;
    PyObject *records = PyList_New(0);
    if (records == NULL) goto fail;
    while (pos >= 0 && pos + 16 <= end) {
        const unsigned char *h = buf + pos;
        uint32_t incl = rd32(h + 8, big);
        if (incl > MAX_RECORD || pos + 16 + (Py_ssize_t)incl > end) break;
        Py_ssize_t record = pos;
        const unsigned char *f = h + 16;
        pos += 16 + (Py_ssize_t)incl;
        packets += 1;
        nbytes += incl;
        Py_ssize_t keep = ~record; /* yielded whole */
        if ((Py_ssize_t)incl >= min_len) {
            const unsigned char *ip = f + ip_at, *tcp = ip + 20;
            if (be16(f + et_at) == 0x0800 && ip[0] == 0x45 && ip[9] == 6 && !(be16(ip + 6) & IP_FRAGMENTED)) {
                if (count > 1 && (Py_ssize_t)((((tcp[1] ^ tcp[3]) & 0xFF) >> 1) % count) != index)
                    continue; /* another shard's connection */
                long total = (long)be16(ip + 2);
                if (total && !(tcp[13] & CONTROL) && total - 20 - ((tcp[12] >> 4) << 2) <= 0)
                    continue; /* a pure ACK */
                keep = record;
            }
        }
        PyObject *n = PyLong_FromSsize_t(keep);
        if (n == NULL || PyList_Append(records, n) < 0) {
            Py_XDECREF(n);
            goto fail;
        }
        Py_DECREF(n);
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("NnLL", records, pos, packets, nbytes);
fail:
    Py_XDECREF(records);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Which records of a pcap window to read (see the module's source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_record_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__record_scan(void) { return PyModule_Create(&module); }
