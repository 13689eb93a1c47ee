/* The pcap reader's hot loop in C (decoders.capture_file): walks the records of one window of a pcap
 * file, drops what the decoder never reads and cuts the IPv4/TCP frames it reads into Segments, so
 * that Python runs once per Segment, not once per record.
 *
 * On a capture of an Ethernet / Linux cooked link layer most records are other shards' connections or
 * pure ACKs, dropped from their headers alone. The test is capture_file._read_pcap's and the cut is
 * tcp_cut.TcpCut.cut's: those stay the reference (tests/decoders/test_record_scan.py compares) and the
 * fallback. Reporting and damage stay in Python.
 *
 * scan(buf, pos, end, big_endian, ethertype_at, ip_at, ifindex_at, index, count, divisor, addrs, ifaces)
 *   -> (items, pos, packets, nbytes, undecodable, whole)
 * items, in record order: a Segment tuple (ts, src, sport, dst, dport, seq, ack, flags, payload,
 * missing, interface) for an IPv4/TCP frame of this shard that is not a pure ACK, or the int offset
 * of any other record, to be yielded whole (``whole`` of those). ifindex_at < 0: no interface in the
 * link header. addrs and ifaces: dicts that keep the address and interface texts made (by int).
 * It stops at the first record not wholly inside buf[:end] or claiming more than 1 MiB, and returns
 * its offset: the Python loop deals with that one (refilling its window, reporting damage). */

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

static PyObject *cached(PyObject *cache, unsigned long key, const char *fmt, const unsigned char *a) {
    PyObject *k = PyLong_FromUnsignedLong(key);
    if (k == NULL) return NULL;
    PyObject *text = PyDict_GetItemWithError(cache, k); /* borrowed */
    if (text != NULL) {
        Py_DECREF(k);
        Py_INCREF(text);
        return text;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(k);
        return NULL;
    }
    text = a != NULL ? PyUnicode_FromFormat(fmt, a[0], a[1], a[2], a[3]) : PyUnicode_FromFormat(fmt, key);
    if (text == NULL || PyDict_SetItem(cache, k, text) < 0) {
        Py_XDECREF(text);
        Py_DECREF(k);
        return NULL;
    }
    Py_DECREF(k);
    return text;
}

static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* TcpCut.cut of the frame f (incl bytes captured of orig): a new Segment, Py_None (nothing to read,
 * *bad set when the TCP header cannot be read) or NULL on error. */
static PyObject *cut(const unsigned char *f, Py_ssize_t incl, uint32_t orig, Py_ssize_t ip_at,
                     Py_ssize_t ifindex_at, double ts, PyObject *addrs, PyObject *ifaces, int *bad) {
    const unsigned char *ip = f + ip_at, *tcp = ip + 20;
    Py_ssize_t total = (Py_ssize_t)be16(ip + 2);
    Py_ssize_t end = total && ip_at + total <= incl ? ip_at + total : incl; /* from f */
    if (end - (ip_at + 20) < 20) {
        *bad = 1;
        Py_RETURN_NONE;
    }
    unsigned off_flags = be16(tcp + 12);
    Py_ssize_t doff = (Py_ssize_t)((off_flags >> 12) << 2);
    if (doff < 20) {
        *bad = 1;
        Py_RETURN_NONE;
    }
    unsigned flags = off_flags & 0x1FF;
    Py_ssize_t missing = 0, from = 0, len = 0;
    if ((total ? total : incl - ip_at) - 20 - doff <= 0) {
        if (!(flags & CONTROL)) Py_RETURN_NONE;
    } else {
        from = ip_at + 20 + doff;
        len = end > from ? end - from : 0;
        if (len == 0 && !(flags & CONTROL)) Py_RETURN_NONE;
        missing = orig > (uint32_t)incl ? (Py_ssize_t)(orig - (uint32_t)incl) : 0;
    }
    PyObject *src = cached(addrs, be32(ip + 12), "%u.%u.%u.%u", ip + 12);
    PyObject *dst = src ? cached(addrs, be32(ip + 16), "%u.%u.%u.%u", ip + 16) : NULL;
    PyObject *iface = Py_None;
    if (dst != NULL && ifindex_at >= 0) {
        iface = cached(ifaces, be32(f + ifindex_at), "%lu", NULL);
    } else {
        Py_INCREF(iface);
    }
    if (src == NULL || dst == NULL || iface == NULL) {
        Py_XDECREF(src);
        Py_XDECREF(dst);
        Py_XDECREF(iface);
        return NULL;
    }
    /* N: the new references (ts, payload, the texts) go into the tuple */
    return Py_BuildValue("(dNINIkkIy#nN)", ts, src, be16(tcp), dst, be16(tcp + 2), (unsigned long)be32(tcp + 4),
                         (unsigned long)be32(tcp + 8), flags, (const char *)f + from, len, missing, iface);
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, end, et_at, ip_at, ifindex_at, index, count;
    int big;
    double divisor;
    PyObject *addrs, *ifaces;
    if (!PyArg_ParseTuple(args, "y*nnpnnnnndO!O!", &view, &pos, &end, &big, &et_at, &ip_at, &ifindex_at, &index,
                          &count, &divisor, &PyDict_Type, &addrs, &PyDict_Type, &ifaces))
        return NULL;
    if (end > view.len) end = view.len;
    if (count < 1) count = 1;
    const unsigned char *buf = view.buf;
    Py_ssize_t min_len = ip_at + IPV4_TCP_MIN;
    long long packets = 0, nbytes = 0, undecodable = 0, whole = 0;
    PyObject *items = PyList_New(0);
    if (items == NULL) goto fail;
    while (pos >= 0 && pos + 16 <= end) {
        const unsigned char *h = buf + pos;
        uint32_t incl = rd32(h + 8, big);
        if (incl > MAX_RECORD || pos + 16 + (Py_ssize_t)incl > end) break;
        Py_ssize_t record = pos;
        const unsigned char *f = h + 16;
        pos += 16 + (Py_ssize_t)incl;
        packets += 1;
        nbytes += incl;
        PyObject *item = NULL;
        if ((Py_ssize_t)incl >= min_len) {
            const unsigned char *ip = f + ip_at, *tcp = ip + 20;
            if (be16(f + et_at) == 0x0800 && ip[0] == 0x45 && ip[9] == 6 && !(be16(ip + 6) & IP_FRAGMENTED)) {
                if (count > 1 && (Py_ssize_t)((((tcp[1] ^ tcp[3]) & 0xFF) >> 1) % count) != index)
                    continue; /* another shard's connection */
                long total = (long)be16(ip + 2);
                if (total && !(tcp[13] & CONTROL) && total - 20 - ((tcp[12] >> 4) << 2) <= 0)
                    continue; /* a pure ACK */
                double ts = (double)rd32(h, big) + (double)rd32(h + 4, big) / divisor;
                int bad = 0;
                item = cut(f, (Py_ssize_t)incl, rd32(h + 12, big), ip_at, ifindex_at, ts, addrs, ifaces, &bad);
                if (item == NULL) goto fail;
                undecodable += bad;
                if (item == Py_None) {
                    Py_DECREF(item);
                    continue;
                }
            }
        }
        if (item == NULL) {
            item = PyLong_FromSsize_t(record);
            whole += 1;
            if (item == NULL) goto fail;
        }
        if (PyList_Append(items, item) < 0) {
            Py_DECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("NnLLLL", items, pos, packets, nbytes, undecodable, whole);
fail:
    Py_XDECREF(items);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Which records of a pcap window to read (see the module's source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_record_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__record_scan(void) { return PyModule_Create(&module); }
