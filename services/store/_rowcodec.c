/* Rows as a PostgreSQL binary COPY payload (issue 14, session 17): what
 * services/store/rowcodec.py's `encode_py` does, in C, so that a batch's rows cost the
 * service's thread a copy of their bytes, not asyncpg's per-value encoding.
 *
 * encode(rows, types) -> bytes
 *   rows:  a list of tuples, each of len(types) values;
 *   types: one ASCII code a column (rowcodec.py lists them):
 *     't' text       str, sent as UTF-8
 *     'q' int8       int (not bool), -2**63 .. 2**63-1
 *     'b' boolean    True or False
 *     'B' bytes      bytes as they are (json: its text; bytea)
 *     'J' jsonb      bytes of JSON text, sent after jsonb's version byte 1
 *     'a' text[]     a list or tuple of str (one dimension, no NULL element)
 *   None is NULL in every column.
 * The payload: the 11-byte signature, flags and header extension length (0, 0); each row
 * as its field count (int16) and each field as its length (int32, -1 for NULL) and
 * bytes; the trailer (int16 -1). All integers big-endian (the protocol's order).
 *
 * Anything else raises (TypeError for a value of the wrong type, ValueError for a bad
 * `types`, OverflowError for an int out of range or a field or payload too large):
 * the caller falls back to nothing, the batch fails as a statement would have.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define TEXT_OID 25         /* pg_type.oid of text: fixed since PostgreSQL 6 */
#define FIELD_MAX INT32_MAX /* a field's length is an int32 */

static const char SIGNATURE[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};

/* The payload being written: a bytes object grown by doubling, shrunk at the end. */
typedef struct {
    PyObject *bytes;
    Py_ssize_t len;
    Py_ssize_t cap;
} Writer;

/* Room for `n` more bytes; -1 with an exception set when the payload cannot grow. */
static int reserve(Writer *w, Py_ssize_t n) {
    if (n < 0 || n > PY_SSIZE_T_MAX - w->len) {
        PyErr_SetString(PyExc_OverflowError, "COPY payload too large");
        return -1;
    }
    if (w->len + n <= w->cap) {
        return 0;
    }
    Py_ssize_t cap = w->cap;
    while (cap < w->len + n) {
        cap = cap > PY_SSIZE_T_MAX / 2 ? PY_SSIZE_T_MAX : cap * 2;
    }
    if (_PyBytes_Resize(&w->bytes, cap) < 0) {
        return -1; /* w->bytes is NULL now, MemoryError set */
    }
    w->cap = cap;
    return 0;
}

/* Big-endian stores into room `reserve` made; each returns the position after it. */
static char *store_u16(char *p, uint16_t v) {
    p[0] = (char)(v >> 8);
    p[1] = (char)v;
    return p + 2;
}

static char *store_u32(char *p, uint32_t v) {
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
    return p + 4;
}

/* `n` bytes of room at the end of the payload, or NULL with an exception set; the
 * caller writes exactly `n` bytes there. */
static char *room(Writer *w, Py_ssize_t n) {
    if (reserve(w, n) < 0) {
        return NULL;
    }
    char *p = PyBytes_AS_STRING(w->bytes) + w->len;
    w->len += n;
    return p;
}

/* A field of `n` bytes after its length word: its room, or NULL past int32 (raised). */
static char *field(Writer *w, Py_ssize_t n) {
    if (n > FIELD_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a COPY field is limited to 2**31-1 bytes");
        return NULL;
    }
    char *p = room(w, 4 + n);
    return p == NULL ? NULL : store_u32(p, (uint32_t)n);
}

/* The UTF-8 bytes of `s` into *data, *size (cached in the str). */
static int utf8_of(PyObject *s, const char **data, Py_ssize_t *size, const char *what) {
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%s: expected str, got %.100s", what, Py_TYPE(s)->tp_name);
        return -1;
    }
    *data = PyUnicode_AsUTF8AndSize(s, size); /* raises on a lone surrogate */
    return *data == NULL ? -1 : 0;
}

static int put_text(Writer *w, PyObject *v) {
    const char *data;
    Py_ssize_t size;
    if (utf8_of(v, &data, &size, "text column") < 0) {
        return -1;
    }
    char *p = field(w, size);
    if (p == NULL) {
        return -1;
    }
    memcpy(p, data, (size_t)size);
    return 0;
}

static int put_int8(Writer *w, PyObject *v) {
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "int8 column: expected int, got %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    long long x = PyLong_AsLongLong(v); /* OverflowError outside int64 */
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    char *p = field(w, 8);
    if (p == NULL) {
        return -1;
    }
    uint64_t u = (uint64_t)x;
    store_u32(store_u32(p, (uint32_t)(u >> 32)), (uint32_t)u);
    return 0;
}

static int put_bool(Writer *w, PyObject *v) {
    if (!PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "boolean column: expected bool, got %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    char *p = field(w, 1);
    if (p == NULL) {
        return -1;
    }
    *p = v == Py_True;
    return 0;
}

/* bytes as they are, after jsonb's version byte 1 when `prefixed`. */
static int put_bytes(Writer *w, PyObject *v, int prefixed) {
    if (!PyBytes_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s column: expected bytes, got %.100s", prefixed ? "jsonb" : "bytes",
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(v);
    if (size > FIELD_MAX - prefixed) { /* before the sum below, which must not overflow */
        PyErr_SetString(PyExc_OverflowError, "a COPY field is limited to 2**31-1 bytes");
        return -1;
    }
    char *p = field(w, size + prefixed);
    if (p == NULL) {
        return -1;
    }
    if (prefixed) {
        *p++ = 1;
    }
    memcpy(p, PyBytes_AS_STRING(v), (size_t)size);
    return 0;
}

/* A one-dimensional text[]: ndim, has-nulls flag, element type, then the dimension
 * (length, lower bound 1) and each element's length and bytes. An empty array is
 * PostgreSQL's: no dimension at all. */
static int put_text_array(Writer *w, PyObject *v) {
    if (!PyList_Check(v) && !PyTuple_Check(v)) {
        PyErr_Format(PyExc_TypeError, "text[] column: expected list or tuple, got %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
    PyObject **items = PySequence_Fast_ITEMS(v);
    if (n > FIELD_MAX / 4) {
        PyErr_SetString(PyExc_OverflowError, "text[] too long for a COPY field");
        return -1;
    }
    /* The field's length: the header, then 4 bytes a length plus each element's bytes,
     * each step checked against int32 before it is added. */
    Py_ssize_t size = n ? 20 : 12;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *data;
        Py_ssize_t len;
        if (utf8_of(items[i], &data, &len, "text[] element") < 0) {
            return -1;
        }
        if (len > FIELD_MAX - 4 || size > FIELD_MAX - 4 - len) {
            PyErr_SetString(PyExc_OverflowError, "a COPY field is limited to 2**31-1 bytes");
            return -1;
        }
        size += 4 + len;
    }
    char *p = field(w, size);
    if (p == NULL) {
        return -1;
    }
    p = store_u32(store_u32(store_u32(p, n ? 1 : 0), 0), TEXT_OID);
    if (n == 0) {
        return 0;
    }
    p = store_u32(store_u32(p, (uint32_t)n), 1);
    for (Py_ssize_t i = 0; i < n; i++) {
        /* No Python code has run since the sizes were taken: the same elements, their
         * UTF-8 cached in them. */
        Py_ssize_t len;
        const char *data = PyUnicode_AsUTF8AndSize(items[i], &len);
        p = store_u32(p, (uint32_t)len);
        memcpy(p, data, (size_t)len);
        p += len;
    }
    return 0;
}

static int put_field(Writer *w, char type, PyObject *v) {
    if (v == Py_None) {
        char *p = room(w, 4);
        return p == NULL ? -1 : (store_u32(p, (uint32_t)-1), 0);
    }
    switch (type) {
    case 't':
        return put_text(w, v);
    case 'q':
        return put_int8(w, v);
    case 'b':
        return put_bool(w, v);
    case 'B':
        return put_bytes(w, v, 0);
    case 'J':
        return put_bytes(w, v, 1);
    case 'a':
        return put_text_array(w, v);
    }
    PyErr_Format(PyExc_ValueError, "unknown column type %c", type);
    return -1;
}

static PyObject *encode(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *rows;
    const char *types;
    Py_ssize_t ncols;
    if (!PyArg_ParseTuple(args, "O!s#:encode", &PyList_Type, &rows, &types, &ncols)) {
        return NULL;
    }
    if (ncols < 1 || ncols > INT16_MAX) {
        PyErr_SetString(PyExc_ValueError, "types: one code a column, 1 to 32767 columns");
        return NULL;
    }
    for (Py_ssize_t c = 0; c < ncols; c++) {
        if (strchr("tqbBJa", types[c]) == NULL || types[c] == '\0') {
            PyErr_Format(PyExc_ValueError, "unknown column type %c", types[c]);
            return NULL;
        }
    }
    Writer w = {PyBytes_FromStringAndSize(NULL, 4096), 0, 4096};
    if (w.bytes == NULL) {
        return NULL;
    }
    char *p = room(&w, sizeof SIGNATURE + 8); /* within the first 4096 bytes */
    memcpy(p, SIGNATURE, sizeof SIGNATURE);
    store_u32(store_u32(p + sizeof SIGNATURE, 0), 0); /* no flags, no header extension */
    Py_ssize_t nrows = PyList_GET_SIZE(rows);
    for (Py_ssize_t r = 0; r < nrows; r++) {
        /* Borrowed references: nothing below runs Python code that could change the list. */
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != ncols) {
            PyErr_Format(PyExc_TypeError, "row %zd: expected a tuple of %zd values", r, ncols);
            goto fail;
        }
        if ((p = room(&w, 2)) == NULL) {
            goto fail;
        }
        store_u16(p, (uint16_t)ncols);
        for (Py_ssize_t c = 0; c < ncols; c++) {
            if (put_field(&w, types[c], PyTuple_GET_ITEM(row, c)) < 0) {
                goto fail;
            }
        }
    }
    if ((p = room(&w, 2)) == NULL) {
        goto fail;
    }
    store_u16(p, 0xFFFF); /* the trailer */
    if (_PyBytes_Resize(&w.bytes, w.len) < 0) {
        goto fail;
    }
    return w.bytes;
fail:
    Py_XDECREF(w.bytes);
    return NULL;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, "encode(rows, types) -> bytes: rows as a PostgreSQL binary COPY payload"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_rowcodec", .m_doc = "rows as PostgreSQL binary COPY payloads", .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__rowcodec(void) { return PyModule_Create(&module); }
