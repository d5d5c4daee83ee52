/* The domain's hottest few steps in hand-written C (issue 14, session 19), built with the
 * compiled core (services/compiled_core.py `EXTENSIONS`); an interpreted process runs
 * their Python references, which the tests hold these equal to:
 *   state, message   a user's stored state and user-changed message as JSON (below);
 *   value            a profile Value (user.new_value);
 *   uuid_hex         a name-based id (ids._uuid_of).
 *
 * A user's stored state and its `user-changed` message as JSON bytes, written directly:
 * what `User._state_json_reference` and publication's reference
 * message (`orjson.dumps` of `_message(..., user_view(user))`) write, byte for byte,
 * without building the dicts (or msgspec structs) only for an encoder to walk them.
 * Every batch writes each changed user's state and most facts a message; an import row
 * writes both, and they were a quarter of its instructions.
 *
 * state(<39 values>) -> bytes | None
 *   The state's 35 keys in sorted order, each platform given as three values
 *   (sessions_count, last_seen_at, device): see user.py `state_json` for the order.
 * message(<32 values>) -> bytes | None
 *   See publication.py `message_body` for the order. `keys` None: a first message, whose
 *   changedKeys are every key it carries (publication._first_keys).
 *
 * None, with no exception, when a value is not one this writer writes exactly as orjson
 * does: then the caller writes the reference way, which writes it or raises what orjson
 * raises. Written here: None, True, False, str (not a subclass) without surrogates,
 * int (not a subclass) from -2**63 to 2**64-1, and a list or tuple of those. Not: floats
 * (msgspec and orjson disagree on some; orjson is the definition), dicts where a value is
 * expected, subclasses, anything else.
 *
 * Strings are written as orjson writes them: UTF-8; `"` and `\` escaped; \b \t \n \f \r;
 * every other control character as \u00XX (lowercase hex); nothing else escaped (not
 * U+007F, not U+2028). Objects whose keys are data (the fields, veils, a platform's
 * device; the message's profile) are written with their keys sorted by code point, which
 * is the order of their UTF-8 bytes, orjson's OPT_SORT_KEYS order.
 *
 * The bytes are written into one kept buffer (the GIL is held throughout and no Python
 * code runs while it is written) and copied out; a buffer grown past KEPT_MAX for a huge
 * user is given back after it. tests/unit/test_publication.py and test_domain_user.py
 * hold the output equal to the references with hypothesis, whatever a user holds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEPT_START 4096
#define KEPT_MAX (1 << 20)
#define NOT_PLAIN 1 /* a writer's answer: not this writer's to write; no exception set */
#define SMALL 32    /* pairs sorted on the stack; more take the heap */

/* -- the output buffer ------------------------------------------------------------- */

static char *kept;
static Py_ssize_t kept_cap;

typedef struct {
    char *p;
    Py_ssize_t len;
} Out;

/* The buffer grown to hold `n` more bytes: 0, or -1 with MemoryError set. */
static Py_NO_INLINE int grow(Out *o, Py_ssize_t n) {
    if (n > PY_SSIZE_T_MAX / 2 - o->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = kept_cap;
    while (cap < o->len + n) {
        cap *= 2;
    }
    char *grown = PyMem_Realloc(kept, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    kept = o->p = grown;
    kept_cap = cap;
    return 0;
}

/* Room for `n` more bytes (inline: most writes fit, and a call a value was a third of
 * the writer's instructions). */
static inline int reserve(Out *o, Py_ssize_t n) {
    return n <= kept_cap - o->len ? 0 : grow(o, n);
}

static inline int put(Out *o, const char *s, Py_ssize_t n) {
    if (reserve(o, n) < 0) {
        return -1;
    }
    memcpy(o->p + o->len, s, (size_t)n);
    o->len += n;
    return 0;
}

/* A literal: its length a constant, so the copy is a few moves, not a call. */
#define PUT(o, lit) put((o), (lit), (Py_ssize_t)(sizeof(lit) - 1))

/* A key made once (`"key":` and the like) of `n` bytes, padded to KEY_MAX: copied as
 * KEY_MAX bytes (a few moves, where a copy of a variable size is a call), the position
 * moved by `n` (what follows writes over the rest). */
#define KEY_MAX 32
static inline int put_key(Out *o, const char *key, Py_ssize_t n) {
    if (reserve(o, KEY_MAX) < 0) {
        return -1;
    }
    memcpy(o->p + o->len, key, KEY_MAX);
    o->len += n;
    return 0;
}

/* The written bytes as a bytes object (NULL, or None for NOT_PLAIN, when `r` says the
 * writing did not end well); the buffer kept for the next call, or given back when a huge
 * user grew it. */
static PyObject *finish(Out *o, int r) {
    PyObject *bytes = r < 0 ? NULL : r == NOT_PLAIN ? Py_NewRef(Py_None) : PyBytes_FromStringAndSize(o->p, o->len);
    if (kept_cap > KEPT_MAX) {
        char *small = PyMem_Realloc(kept, KEPT_START);
        if (small != NULL) {
            kept = small;
            kept_cap = KEPT_START;
        }
    }
    return bytes;
}

/* -- values -------------------------------------------------------------------------- */

/* Which ASCII bytes a JSON string escapes, and how: 'u' as \u00XX, else the letter. */
static char ESCAPE[128];

static void init_escapes(void) {
    for (int c = 0; c < 0x20; c++) {
        ESCAPE[c] = 'u';
    }
    ESCAPE['\b'] = 'b';
    ESCAPE['\t'] = 't';
    ESCAPE['\n'] = 'n';
    ESCAPE['\f'] = 'f';
    ESCAPE['\r'] = 'r';
    ESCAPE['"'] = '"';
    ESCAPE['\\'] = '\\';
}

static const char HEX[] = "0123456789abcdef";

/* One ASCII character, escaped as needed, at `p` (room for 6): the position after it. */
static inline char *ascii_char(char *p, unsigned char c) {
    char e = ESCAPE[c];
    if (e == 0) {
        *p++ = (char)c;
    } else if (e == 'u') {
        memcpy(p, "\\u00", 4);
        p[4] = HEX[c >> 4];
        p[5] = HEX[c & 15];
        p += 6;
    } else {
        p[0] = '\\';
        p[1] = e;
        p += 2;
    }
    return p;
}

/* How many of the `n` ASCII bytes at `c` need no escape before the first that does:
 * eight at a time (a byte below 0x20, or equal to '"' or '\'; every byte is below 0x80),
 * the rest one by one. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline Py_ssize_t plain_run(const unsigned char *c, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, c + i, 8);
        uint64_t quote = x ^ (ONES * '"'), backslash = x ^ (ONES * '\\');
        /* The has-a-zero-byte test of each, and has-a-byte-below-0x20: `& ~v & HIGHS` for
         * each v is `& ~x & HIGHS`, every byte of x, quote and backslash being below 0x80. */
        uint64_t hit = ((x - ONES * 0x20) | (quote - ONES) | (backslash - ONES)) & ~x & HIGHS;
        if (hit != 0) {
            break;
        }
    }
    while (i < n && ESCAPE[c[i]] == 0) {
        i++;
    }
    return i;
}

/* A string with something to escape, or beyond ASCII, from code point `start` on, quoted. */
static Py_NO_INLINE int write_str_slow(Out *o, PyObject *s, Py_ssize_t start) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s) - start;
    if (n > (PY_SSIZE_T_MAX - 2) / 6) { /* \u00XX: 6 bytes a character at most */
        PyErr_NoMemory();
        return -1;
    }
    if (reserve(o, n * 6 + 2) < 0) {
        return -1;
    }
    char *p = o->p + o->len;
    *p++ = '"';
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = start; i < start + n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            p = ascii_char(p, (unsigned char)c);
        } else if (c < 0x800) {
            *p++ = (char)(0xC0 | (c >> 6));
            *p++ = (char)(0x80 | (c & 0x3F));
        } else if (c >= 0xD800 && c < 0xE000) {
            return NOT_PLAIN;
        } else if (c < 0x10000) {
            *p++ = (char)(0xE0 | (c >> 12));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        } else {
            *p++ = (char)(0xF0 | (c >> 18));
            *p++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        }
    }
    *p++ = '"';
    o->len = p - o->p;
    return 0;
}

/* The str `s` from code point `start` on, quoted. NOT_PLAIN for a surrogate (orjson
 * refuses it; the reference raises its error). Most strings are ASCII with nothing to
 * escape: one scan and one copy. */
static inline int write_str(Out *o, PyObject *s, Py_ssize_t start) {
    if (PyUnicode_IS_ASCII(s)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(s) - start;
        const unsigned char *c = (const unsigned char *)PyUnicode_DATA(s) + start;
        if (plain_run(c, n) == n) {
            if (reserve(o, n + 2) < 0) {
                return -1;
            }
            char *p = o->p + o->len;
            p[0] = '"';
            memcpy(p + 1, c, (size_t)n);
            p[n + 1] = '"';
            o->len += n + 2;
            return 0;
        }
    }
    return write_str_slow(o, s, start);
}

/* Two decimal digits a step: "00" .. "99". */
static char PAIRS[200];

static void init_pairs(void) {
    for (int i = 0; i < 100; i++) {
        PAIRS[2 * i] = (char)('0' + i / 10);
        PAIRS[2 * i + 1] = (char)('0' + i % 10);
    }
}

/* An unsigned integer's decimal digits, with a minus before them if `negative`: made
 * backwards, two a step, ending at `digits + 24`, then copied as 24 bytes from their start
 * (a fixed-size copy is a few moves; the bytes past the number are written over next). */
static inline int write_digits(Out *o, unsigned long long v, int negative) {
    if (reserve(o, 24) < 0) {
        return -1;
    }
    char digits[48];
    char *end = digits + 24, *d = end;
    while (v >= 100) {
        unsigned long long q = v / 100;
        d -= 2;
        memcpy(d, PAIRS + 2 * (v - q * 100), 2);
        v = q;
    }
    if (v >= 10) {
        d -= 2;
        memcpy(d, PAIRS + 2 * v, 2);
    } else {
        *--d = (char)('0' + v);
    }
    if (negative) {
        *--d = '-';
    }
    memcpy(o->p + o->len, d, 24);
    o->len += end - d;
    return 0;
}

/* An int (not a bool, not a subclass): NOT_PLAIN outside -2**63 .. 2**64-1, which
 * orjson refuses. */
static Py_NO_INLINE int write_int(Out *o, PyObject *v) {
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow == 0) {
        if (n == -1 && PyErr_Occurred()) {
            return -1;
        }
        return n < 0 ? write_digits(o, 0ULL - (unsigned long long)n, 1) : write_digits(o, (unsigned long long)n, 0);
    }
    if (overflow < 0) {
        return NOT_PLAIN;
    }
    unsigned long long u = PyLong_AsUnsignedLongLong(v);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        return NOT_PLAIN;
    }
    return write_digits(o, u, 0);
}

static int write_array(Out *o, PyObject *v);

/* Any value this writer writes: null, true, false, a str, an int, or a list or tuple of
 * those. Text first: most values are. */
static inline int write_value(Out *o, PyObject *v) {
    if (PyUnicode_CheckExact(v)) {
        return write_str(o, v, 0);
    }
    if (v == Py_None) {
        return PUT(o, "null");
    }
    if (v == Py_True) {
        return PUT(o, "true");
    }
    if (v == Py_False) {
        return PUT(o, "false");
    }
    if (PyLong_CheckExact(v)) {
        return write_int(o, v);
    }
    if (PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
        return write_array(o, v);
    }
    return NOT_PLAIN;
}

/* A scalar: what write_value writes but an array (a profile value is a scalar or a list
 * of text: arrays are not nested). */
static int write_scalar(Out *o, PyObject *v) {
    return (PyList_CheckExact(v) || PyTuple_CheckExact(v)) ? NOT_PLAIN : write_value(o, v);
}

static Py_NO_INLINE int write_array(Out *o, PyObject *v) {
    Py_ssize_t n;
    PyObject **items;
    if (PyList_CheckExact(v)) {
        n = PyList_GET_SIZE(v);
        items = ((PyListObject *)v)->ob_item;
    } else {
        n = PyTuple_GET_SIZE(v);
        items = ((PyTupleObject *)v)->ob_item;
    }
    if (PUT(o, "[") < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = (i > 0 ? PUT(o, ",") : 0);
        if (r == 0) {
            r = write_scalar(o, items[i]);
        }
        if (r != 0) {
            return r;
        }
    }
    return PUT(o, "]");
}

/* -- objects with sorted keys --------------------------------------------------------- */

typedef struct {
    PyObject *key; /* an exact str */
    PyObject *value;
} Pair;

/* Code point order, which is the UTF-8 bytes' order. Keys are exact str: no error.
 * ASCII keys (nearly all) by their bytes, without a call into the interpreter. */
static inline int key_order(PyObject *a, PyObject *b) {
    if (PyUnicode_IS_ASCII(a) && PyUnicode_IS_ASCII(b)) {
        Py_ssize_t na = PyUnicode_GET_LENGTH(a), nb = PyUnicode_GET_LENGTH(b);
        int c = memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)(na < nb ? na : nb));
        return c != 0 ? c : (na > nb) - (na < nb);
    }
    return PyUnicode_Compare(a, b);
}

static int pair_order(const void *a, const void *b) {
    return key_order(((const Pair *)a)->key, ((const Pair *)b)->key);
}

static void sort_pairs(Pair *pairs, Py_ssize_t n) {
    if (n > 16) {
        qsort(pairs, (size_t)n, sizeof(Pair), pair_order);
        return;
    }
    for (Py_ssize_t i = 1; i < n; i++) { /* a few keys: insertion, no calls through qsort */
        Pair x = pairs[i];
        Py_ssize_t j = i;
        while (j > 0 && key_order(pairs[j - 1].key, x.key) > 0) {
            pairs[j] = pairs[j - 1];
            j--;
        }
        pairs[j] = x;
    }
}

/* The pairs of `extra` (n_extra of them) and of `dict` in `*pairs` (`small` when they fit,
 * else a new array the caller frees), unsorted. NOT_PLAIN when `dict` is not an exact
 * dict, has a key that is not an exact str, or has a key of `extra` (the reference's
 * `{..., **device}` lets the device's win). */
static int gather(PyObject *dict, const Pair *extra, Py_ssize_t n_extra, Pair *small, Pair **pairs, Py_ssize_t *n) {
    *pairs = small;
    if (!PyDict_CheckExact(dict)) {
        return NOT_PLAIN;
    }
    Py_ssize_t total = PyDict_GET_SIZE(dict) + n_extra;
    if (total > SMALL) {
        if ((*pairs = PyMem_New(Pair, (size_t)total)) == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n_extra; i++) {
        (*pairs)[i] = extra[i];
    }
    Py_ssize_t pos = 0, i = n_extra;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            return NOT_PLAIN;
        }
        for (Py_ssize_t e = 0; e < n_extra; e++) {
            if (key_order(key, extra[e].key) == 0) {
                return NOT_PLAIN;
            }
        }
        (*pairs)[i].key = key;
        (*pairs)[i].value = value;
        i++;
    }
    *n = i;
    return 0;
}

/* A field's Value (a tuple of four: v, q, m, t) as the array [v,q,m,t]. */
static int write_field_value(Out *o, PyObject *value) {
    if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 4) {
        return NOT_PLAIN;
    }
    int r = PUT(o, "[");
    for (Py_ssize_t i = 0; i < 4 && r == 0; i++) {
        if (i > 0 && (r = PUT(o, ",")) != 0) {
            break;
        }
        r = write_value(o, PyTuple_GET_ITEM(value, i));
    }
    return r != 0 ? r : PUT(o, "]");
}

/* `dict` with `extra` pairs as one object, keys sorted; `fields`: its values are Values. */
static int write_sorted(Out *o, PyObject *dict, const Pair *extra, Py_ssize_t n_extra, int fields) {
    Pair small[SMALL], *pairs = small;
    Py_ssize_t n = 0;
    int r = gather(dict, extra, n_extra, small, &pairs, &n);
    if (r == 0) {
        sort_pairs(pairs, n);
        r = PUT(o, "{");
        for (Py_ssize_t i = 0; i < n && r == 0; i++) {
            if ((i > 0 && (r = PUT(o, ",")) != 0) || (r = write_str(o, pairs[i].key, 0)) != 0 || (r = PUT(o, ":")) != 0) {
                break;
            }
            r = fields ? write_field_value(o, pairs[i].value) : write_value(o, pairs[i].value);
        }
        if (r == 0) {
            r = PUT(o, "}");
        }
    }
    if (pairs != small) {
        PyMem_Free(pairs);
    }
    return r;
}

/* -- the state -------------------------------------------------------------------------- */

static PyObject *LAST_SEEN_AT, *SESSIONS_COUNT; /* a platform's own keys, beside its device's */

/* How a key's value is given: one value; the fields (Values); an object of values; a
 * platform (three values: sessions_count, last_seen_at, device). */
enum shape { VALUE, FIELDS, OBJECT, PLATFORM };

typedef struct {
    const char *key; /* written as `"key":`, after a comma but for the first */
    enum shape shape;
} Slot;

static const Slot STATE[] = {
    {"blocked", VALUE},           {"booted", VALUE},          {"channel_id", VALUE},
    {"city", VALUE},              {"country", VALUE},         {"created_at", VALUE},
    {"deleted", VALUE},           {"delivered", VALUE},       {"fields", FIELDS},
    {"has_push_token", VALUE},    {"id", VALUE},              {"import_tags", VALUE},
    {"language", VALUE},          {"last_activity_at", VALUE}, {"last_contact_at", VALUE},
    {"last_login_at", VALUE},     {"last_seen_at", VALUE},    {"masked", VALUE},
    {"member_id", VALUE},         {"merged_into", VALUE},     {"merged_user_ids", VALUE},
    {"mobile", PLATFORM},         {"mobile_veils", VALUE},    {"offered", VALUE},
    {"pending_into", VALUE},      {"pending_since", VALUE},   {"sessions_count", VALUE},
    {"tags", VALUE},              {"type", VALUE},            {"unsubscribe_email", VALUE},
    {"unsubscribe_texting", VALUE}, {"updated_at", VALUE},    {"veils", OBJECT},
    {"version", VALUE},           {"web", PLATFORM},
};
#define STATE_KEYS ((Py_ssize_t)(sizeof STATE / sizeof STATE[0]))
#define STATE_ARGS (STATE_KEYS + 2 * 2) /* each platform takes three */

/* `"key":` after a comma (the first after the brace), padded to KEY_MAX (`put_key`). */
static char STATE_KEY[STATE_KEYS][KEY_MAX];
static Py_ssize_t STATE_KEY_LEN[STATE_KEYS];

static void init_state_keys(void) {
    for (Py_ssize_t k = 0; k < STATE_KEYS; k++) {
        STATE_KEY_LEN[k] = snprintf(STATE_KEY[k], KEY_MAX, "%s\"%s\":", k == 0 ? "{" : ",", STATE[k].key);
    }
}

static int write_state(Out *o, PyObject *const *args) {
    Py_ssize_t a = 0;
    for (Py_ssize_t k = 0; k < STATE_KEYS; k++) {
        int r = put_key(o, STATE_KEY[k], STATE_KEY_LEN[k]);
        if (r != 0) {
            return r;
        }
        switch (STATE[k].shape) {
        case VALUE:
            r = write_value(o, args[a++]);
            break;
        case FIELDS:
            r = write_sorted(o, args[a++], NULL, 0, 1);
            break;
        case OBJECT:
            r = write_sorted(o, args[a++], NULL, 0, 0);
            break;
        default: { /* PLATFORM */
            Pair own[2] = {{SESSIONS_COUNT, args[a]}, {LAST_SEEN_AT, args[a + 1]}};
            r = write_sorted(o, args[a + 2], own, 2, 0);
            a += 3;
            break;
        }
        }
        if (r != 0) {
            return r;
        }
    }
    return PUT(o, "}");
}

static PyObject *state(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != STATE_ARGS) {
        PyErr_Format(PyExc_TypeError, "state() takes %zd values, not %zd", (Py_ssize_t)STATE_ARGS, nargs);
        return NULL;
    }
    Out o = {kept, 0};
    return finish(&o, write_state(&o, args));
}

/* -- the message ------------------------------------------------------------------------ */

/* The message's arguments, by position (publication.message_body passes them so). */
enum {
    M_EVENT_ID, M_VERSION, M_CHANGE, M_KEYS, M_CAUSATION_ID, M_AT,
    M_ID, M_CHANNEL_ID, M_TYPE, M_MEMBER_ID, M_FIELDS, M_TAGS, M_IMPORT_TAGS,
    M_UNSUBSCRIBE_EMAIL, M_UNSUBSCRIBE_TEXTING, M_BLOCKED, M_MASKED, M_LANGUAGE, M_CITY, M_COUNTRY,
    M_SESSIONS_COUNT, M_LAST_SEEN_AT, M_CREATED_AT, M_UPDATED_AT,
    M_WEB_SESSIONS, M_WEB_LAST_SEEN, M_WEB_DEVICE, M_MOBILE_SESSIONS, M_MOBILE_LAST_SEEN, M_MOBILE_DEVICE,
    M_DELIVERED, M_MERGED_USER_IDS,
    MESSAGE_ARGS
};

#define PROFILE_PREFIX "profile."
#define PROFILE_CUT 8
/* A message platform's device keys, in sessions.DEVICE_KEYS' order (the view's), and the
 * same keys sorted (a first message's changedKeys list them flattened, sorted). */
static const char *const DEVICE_KEYS[] = {"browser", "browserName", "os", "osName", "device", "appName", "appVersion"};
#define N_DEVICE ((int)(sizeof DEVICE_KEYS / sizeof DEVICE_KEYS[0]))
static const int DEVICE_SORTED[N_DEVICE] = {5, 6, 0, 1, 4, 2, 3}; /* appName appVersion browser browserName device os osName */
static PyObject *DEVICE_KEY[N_DEVICE];
static PyObject *NAME, *EMAIL, *MOBILE_NUMBER; /* "name", "profile.email", "profile.mobileNumber" */

/* Whether a str key starts with "profile.". */
static int is_profile_key(PyObject *key) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(key);
    if (n < PROFILE_CUT) {
        return 0;
    }
    if (PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND) {
        return memcmp(PyUnicode_DATA(key), PROFILE_PREFIX, PROFILE_CUT) == 0;
    }
    int kind = PyUnicode_KIND(key);
    const void *data = PyUnicode_DATA(key);
    for (int i = 0; i < PROFILE_CUT; i++) {
        if (PyUnicode_READ(kind, data, i) != (Py_UCS4)PROFILE_PREFIX[i]) {
            return 0;
        }
    }
    return 1;
}

/* What the fields give the view: the profile's pairs with a value (sorted), the name,
 * and which contact keys hold a qualified value. */
typedef struct {
    Pair small[SMALL];
    Pair *profile;
    Py_ssize_t n_profile;
    PyObject *name; /* borrowed; Py_None when none */
    int email_qualified, mobile_qualified;
} Parts;

static int qualified(PyObject *fields, PyObject *key, int *out) {
    PyObject *value = PyDict_GetItemWithError(fields, key);
    *out = 0;
    if (value == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 4) {
        return NOT_PLAIN;
    }
    if (PyTuple_GET_ITEM(value, 0) == Py_None) {
        return 0;
    }
    PyObject *q = PyTuple_GET_ITEM(value, 1);
    if (q != Py_True && q != Py_False) {
        return NOT_PLAIN;
    }
    *out = q == Py_True;
    return 0;
}

static int gather_parts(PyObject *fields, Parts *parts) {
    parts->profile = parts->small;
    parts->n_profile = 0;
    parts->name = Py_None;
    parts->email_qualified = parts->mobile_qualified = 0;
    if (!PyDict_CheckExact(fields)) {
        return NOT_PLAIN;
    }
    Py_ssize_t size = PyDict_GET_SIZE(fields);
    if (size > SMALL && (parts->profile = PyMem_New(Pair, (size_t)size)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(fields, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 4) {
            return NOT_PLAIN;
        }
        PyObject *v = PyTuple_GET_ITEM(value, 0);
        if (v == Py_None) {
            continue;
        }
        if (is_profile_key(key)) {
            parts->profile[parts->n_profile].key = key;
            parts->profile[parts->n_profile].value = v;
            parts->n_profile++;
        } else if (key == NAME || PyUnicode_Compare(key, NAME) == 0) {
            parts->name = v;
        }
    }
    sort_pairs(parts->profile, parts->n_profile);
    int r = qualified(fields, EMAIL, &parts->email_qualified);
    return r != 0 ? r : qualified(fields, MOBILE_NUMBER, &parts->mobile_qualified);
}

/* A platform's device value for DEVICE_KEYS[i]: borrowed, Py_None when absent; NULL
 * with an exception set on an error. */
static PyObject *device_value(PyObject *device, int i) {
    PyObject *v = PyDict_GetItemWithError(device, DEVICE_KEY[i]);
    return v != NULL ? v : (PyErr_Occurred() ? NULL : Py_None);
}

/* A first message's changedKeys (publication._first_keys): every flattened key of the
 * view with a value but the quiet ones, sorted, written in their sorted order. A
 * platform's flattened keys, `,"web.browser"` …, `,"web.sessionsCount"` last, are made
 * once (`init_flat`): index 0 the mobile's, 1 the web's. */
static char FLAT[2][N_DEVICE + 1][KEY_MAX];
static Py_ssize_t FLAT_LEN[2][N_DEVICE + 1];

static void init_flat(void) {
    static const char *const platforms[2] = {"mobile", "web"};
    for (int p = 0; p < 2; p++) {
        for (int i = 0; i <= N_DEVICE; i++) {
            FLAT_LEN[p][i] = snprintf(FLAT[p][i], KEY_MAX, ",\"%s.%s\"", platforms[p], i < N_DEVICE ? DEVICE_KEYS[i] : "sessionsCount");
        }
    }
}

static int write_platform_keys(Out *o, PyObject *device, int platform) {
    for (int s = 0; s < N_DEVICE && PyDict_GET_SIZE(device) > 0; s++) {
        int i = DEVICE_SORTED[s];
        PyObject *v = device_value(device, i);
        if (v == NULL) {
            return -1;
        }
        if (v != Py_None && put_key(o, FLAT[platform][i], FLAT_LEN[platform][i]) < 0) {
            return -1;
        }
    }
    return put_key(o, FLAT[platform][N_DEVICE], FLAT_LEN[platform][N_DEVICE]);
}

static int write_first_keys(Out *o, PyObject *const *args, const Parts *parts, int masked) {
    int r = PUT(o, "[\"blocked\",\"channelId\"");
    if (r == 0 && args[M_CITY] != Py_None) {
        r = PUT(o, ",\"city\"");
    }
    if (r == 0 && args[M_COUNTRY] != Py_None) {
        r = PUT(o, ",\"country\"");
    }
    if (r == 0) {
        r = PUT(o, ",\"createdAt\",\"deliveredCampaigns\",\"id\"");
    }
    if (r == 0 && args[M_LANGUAGE] != Py_None) {
        r = PUT(o, ",\"language\"");
    }
    if (r == 0) {
        r = PUT(o, ",\"masked\"");
    }
    if (r == 0 && !masked && args[M_MEMBER_ID] != Py_None) {
        r = PUT(o, ",\"memberId\"");
    }
    if (r == 0) {
        r = PUT(o, ",\"mergedUserIds\"");
    }
    if (r == 0) {
        r = write_platform_keys(o, args[M_MOBILE_DEVICE], 0);
    }
    if (r == 0 && !masked) {
        if (parts->name != Py_None) {
            r = PUT(o, ",\"name\"");
        }
        for (Py_ssize_t i = 0; i < parts->n_profile && r == 0; i++) {
            if ((r = PUT(o, ",")) == 0) {
                r = write_str(o, parts->profile[i].key, 0);
            }
        }
    }
    if (r == 0) {
        r = PUT(o, ",\"qualified\",\"sessionsCount\",\"tags\",\"type\",\"unsubscribeEmail\",\"unsubscribeTexting\",\"userImportTags\"");
    }
    if (r == 0) {
        r = write_platform_keys(o, args[M_WEB_DEVICE], 1);
    }
    return r != 0 ? r : PUT(o, "]");
}

/* A platform of the view: sessionsCount, lastSeenAt and every device key (null when
 * unknown), in DEVICE_KEYS' order. `,"browser":` … padded to KEY_MAX, as the state's keys. */
static char DEVICE_FIELD[N_DEVICE][KEY_MAX];
static Py_ssize_t DEVICE_FIELD_LEN[N_DEVICE];

static void init_device_fields(void) {
    for (int i = 0; i < N_DEVICE; i++) {
        DEVICE_FIELD_LEN[i] = snprintf(DEVICE_FIELD[i], KEY_MAX, ",\"%s\":", DEVICE_KEYS[i]);
    }
}

static int write_platform(Out *o, PyObject *sessions, PyObject *last_seen, PyObject *device) {
    int r = PUT(o, "{\"sessionsCount\":");
    if (r == 0) {
        r = write_value(o, sessions);
    }
    if (r == 0) {
        r = PUT(o, ",\"lastSeenAt\":");
    }
    if (r == 0) {
        r = write_value(o, last_seen);
    }
    if (r != 0) {
        return r;
    }
    if (PyDict_GET_SIZE(device) == 0) { /* no device described (every imported user) */
        return PUT(o, ",\"browser\":null,\"browserName\":null,\"os\":null,\"osName\":null,\"device\":null,"
                      "\"appName\":null,\"appVersion\":null}");
    }
    for (int i = 0; i < N_DEVICE && r == 0; i++) {
        PyObject *v = device_value(device, i);
        if (v == NULL || put_key(o, DEVICE_FIELD[i], DEVICE_FIELD_LEN[i]) < 0) {
            return -1;
        }
        r = write_value(o, v);
    }
    return r != 0 ? r : PUT(o, "}");
}

/* One `"key":value` of the message (the key a literal with its comma), in a chain. */
#define FIELD(lit, value) \
    if (r == 0 && (r = PUT(o, lit)) == 0) { \
        r = write_value(o, (value)); \
    }

static int write_view(Out *o, PyObject *const *args, const Parts *parts, int masked) {
    int r = 0;
    FIELD("{\"id\":", args[M_ID]);
    FIELD(",\"channelId\":", args[M_CHANNEL_ID]);
    FIELD(",\"type\":", args[M_TYPE]);
    FIELD(",\"memberId\":", masked ? Py_None : args[M_MEMBER_ID]);
    FIELD(",\"name\":", masked ? Py_None : parts->name);
    FIELD(",\"tags\":", args[M_TAGS]);
    FIELD(",\"userImportTags\":", args[M_IMPORT_TAGS]);
    if (r == 0) {
        r = PUT(o, ",\"profile\":");
    }
    if (r == 0 && masked) {
        r = PUT(o, "null");
    } else if (r == 0) {
        r = PUT(o, "{");
        for (Py_ssize_t i = 0; i < parts->n_profile && r == 0; i++) {
            if ((i > 0 && (r = PUT(o, ",")) != 0) || (r = write_str(o, parts->profile[i].key, PROFILE_CUT)) != 0
                || (r = PUT(o, ":")) != 0) {
                break;
            }
            r = write_value(o, parts->profile[i].value);
        }
        if (r == 0) {
            r = PUT(o, "}");
        }
    }
    if (r == 0) {
        r = PUT(o, ",\"qualified\":[");
        if (r == 0 && parts->email_qualified) {
            r = PUT(o, "\"email\"");
        }
        if (r == 0 && parts->mobile_qualified) {
            r = parts->email_qualified ? PUT(o, ",\"mobileNumber\"") : PUT(o, "\"mobileNumber\"");
        }
        if (r == 0) {
            r = PUT(o, "]");
        }
    }
    FIELD(",\"unsubscribeEmail\":", args[M_UNSUBSCRIBE_EMAIL]);
    FIELD(",\"unsubscribeTexting\":", args[M_UNSUBSCRIBE_TEXTING]);
    FIELD(",\"blocked\":", args[M_BLOCKED]);
    FIELD(",\"masked\":", args[M_MASKED]);
    FIELD(",\"language\":", args[M_LANGUAGE]);
    FIELD(",\"city\":", args[M_CITY]);
    FIELD(",\"country\":", args[M_COUNTRY]);
    FIELD(",\"sessionsCount\":", args[M_SESSIONS_COUNT]);
    /* Never null: a user that never visited was last seen when created (I11). */
    FIELD(",\"lastSeenAt\":", args[M_LAST_SEEN_AT] != Py_None ? args[M_LAST_SEEN_AT] : args[M_CREATED_AT]);
    FIELD(",\"createdAt\":", args[M_CREATED_AT]);
    FIELD(",\"updatedAt\":", args[M_UPDATED_AT]);
    if (r == 0 && (r = PUT(o, ",\"web\":")) == 0) {
        r = write_platform(o, args[M_WEB_SESSIONS], args[M_WEB_LAST_SEEN], args[M_WEB_DEVICE]);
    }
    if (r == 0 && (r = PUT(o, ",\"mobile\":")) == 0) {
        r = write_platform(o, args[M_MOBILE_SESSIONS], args[M_MOBILE_LAST_SEEN], args[M_MOBILE_DEVICE]);
    }
    FIELD(",\"deliveredCampaigns\":", args[M_DELIVERED]);
    FIELD(",\"mergedUserIds\":", args[M_MERGED_USER_IDS]);
    return r != 0 ? r : PUT(o, "}");
}

static int write_message(Out *o, PyObject *const *args, Parts *parts) {
    PyObject *masked_flag = args[M_MASKED];
    if (masked_flag != Py_True && masked_flag != Py_False) {
        return NOT_PLAIN;
    }
    if (!PyDict_CheckExact(args[M_WEB_DEVICE]) || !PyDict_CheckExact(args[M_MOBILE_DEVICE])) {
        return NOT_PLAIN;
    }
    int masked = masked_flag == Py_True;
    int r = gather_parts(args[M_FIELDS], parts);
    FIELD("{\"eventId\":", args[M_EVENT_ID]);
    FIELD(",\"channelId\":", args[M_CHANNEL_ID]);
    FIELD(",\"userId\":", args[M_ID]);
    FIELD(",\"version\":", args[M_VERSION]);
    FIELD(",\"change\":", args[M_CHANGE]);
    if (r == 0 && (r = PUT(o, ",\"changedKeys\":")) == 0) {
        r = args[M_KEYS] == Py_None ? write_first_keys(o, args, parts, masked) : write_value(o, args[M_KEYS]);
    }
    FIELD(",\"causationId\":", args[M_CAUSATION_ID]);
    FIELD(",\"occurredAt\":", args[M_AT]);
    if (r == 0 && (r = PUT(o, ",\"mergedInto\":null,\"user\":")) == 0) {
        r = write_view(o, args, parts, masked);
    }
    return r != 0 ? r : PUT(o, "}");
}

static PyObject *message(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != MESSAGE_ARGS) {
        PyErr_Format(PyExc_TypeError, "message() takes %d values, not %zd", (int)MESSAGE_ARGS, nargs);
        return NULL;
    }
    Out o = {kept, 0};
    Parts parts;
    int r = write_message(&o, args, &parts);
    if (parts.profile != parts.small) {
        PyMem_Free(parts.profile);
    }
    return finish(&o, r);
}

/* -- a profile value ------------------------------------------------------------------- */

/* user.Value (a named tuple), registered once by user.py (`value_type`). */
static PyTypeObject *VALUE_TYPE;

static PyObject *value_type(PyObject *self, PyObject *type) {
    (void)self;
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "value_type() takes a subclass of tuple");
        return NULL;
    }
    Py_INCREF(type);
    Py_XSETREF(VALUE_TYPE, (PyTypeObject *)type);
    Py_RETURN_NONE;
}

/* value(v, q, m, t) -> Value: what `tuple.__new__(Value, (v, q, m, t))` makes (the
 * subclass's instance, allocated by its tp_alloc, holding the four), without the plain
 * tuple that call builds first and the generic call path: every profile value of every
 * fact and import cell is one (~1.4 k → ~0.3 k instructions; issue 14, session 19). */
static PyObject *value(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "value() takes 4 values, not %zd", nargs);
        return NULL;
    }
    if (VALUE_TYPE == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "value(): no type registered (value_type)");
        return NULL;
    }
    PyObject *made = VALUE_TYPE->tp_alloc(VALUE_TYPE, 4);
    if (made == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 4; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(made, i, args[i]);
    }
    return made;
}

/* -- name-based ids ------------------------------------------------------------------------ */

/* SHA-1 (FIPS 180-4) of a short name, for name-based (version 5) UUIDs: an id, not a
 * secret. hashlib's OpenSSL SHA-1 spends ~5 k instructions a call on its context's set-up
 * and clean-up; the hash of a one- or two-block name is ~1.3 k here. tests/unit/
 * test_native.py holds it equal to hashlib's for every length around the block edges. */
static inline uint32_t rol(uint32_t x, int n) {
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    }
    for (int i = 16; i < 80; i++) {
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    /* Five steps a turn with the variables' roles rotated instead of moved, and each
     * round's function in its own loop: no moves, no branch a step. */
#define F1(b, c, d) (((b) & (c)) | (~(b) & (d)))
#define F2(b, c, d) ((b) ^ (c) ^ (d))
#define F3(b, c, d) (((b) & (c)) | ((b) & (d)) | ((c) & (d)))
#define STEP(a, b, c, d, e, f, k, i)                         \
    e += rol(a, 5) + f(b, c, d) + (uint32_t)(k) + w[i]; \
    b = rol(b, 30);
#define TURN(f, k, i)                  \
    STEP(a, b, c, d, e, f, k, i)       \
    STEP(e, a, b, c, d, f, k, i + 1)   \
    STEP(d, e, a, b, c, f, k, i + 2)   \
    STEP(c, d, e, a, b, f, k, i + 3)   \
    STEP(b, c, d, e, a, f, k, i + 4)
    for (int i = 0; i < 20; i += 5) {
        TURN(F1, 0x5A827999, i)
    }
    for (int i = 20; i < 40; i += 5) {
        TURN(F2, 0x6ED9EBA1, i)
    }
    for (int i = 40; i < 60; i += 5) {
        TURN(F3, 0x8F1BBCDC, i)
    }
    for (int i = 60; i < 80; i += 5) {
        TURN(F2, 0xCA62C1D6, i)
    }
#undef TURN
#undef STEP
#undef F3
#undef F2
#undef F1
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1(const unsigned char *data, size_t n, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        sha1_block(h, data + i);
    }
    unsigned char tail[128] = {0};
    size_t rest = n - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t end = rest + 9 <= 64 ? 64 : 128; /* the 0x80 and the 64-bit length fit, or take a block more */
    uint64_t bits = (uint64_t)n * 8;
    for (int j = 0; j < 8; j++) {
        tail[end - 1 - j] = (unsigned char)(bits >> (8 * j));
    }
    sha1_block(h, tail);
    if (end == 128) {
        sha1_block(h, tail + 64);
    }
    for (int j = 0; j < 5; j++) {
        out[4 * j] = (unsigned char)(h[j] >> 24);
        out[4 * j + 1] = (unsigned char)(h[j] >> 16);
        out[4 * j + 2] = (unsigned char)(h[j] >> 8);
        out[4 * j + 3] = (unsigned char)h[j];
    }
}

/* uuid_hex(name: bytes) -> str: the version 5 UUID of a namespaced name (ids._uuid_of),
 * as 32 lowercase hex digits: SHA-1's first 16 bytes, the version and variant bits set. */
static PyObject *uuid_hex(PyObject *self, PyObject *name) {
    (void)self;
    if (!PyBytes_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "uuid_hex() takes bytes");
        return NULL;
    }
    unsigned char digest[20];
    sha1((const unsigned char *)PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name), digest);
    digest[6] = (unsigned char)((digest[6] & 0x0F) | 0x50); /* version 5 */
    digest[8] = (unsigned char)((digest[8] & 0x3F) | 0x80); /* RFC 4122 variant */
    PyObject *hex = PyUnicode_New(32, 127);
    if (hex == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(hex);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = (Py_UCS1)HEX[digest[i] >> 4];
        out[2 * i + 1] = (Py_UCS1)HEX[digest[i] & 15];
    }
    return hex;
}

/* -- the module ------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"state", (PyCFunction)(void (*)(void))state, METH_FASTCALL,
     "state(<39 values>) -> bytes | None: a user's stored state (user.py state_json)"},
    {"message", (PyCFunction)(void (*)(void))message, METH_FASTCALL,
     "message(<32 values>) -> bytes | None: a user-changed message (publication.message_body)"},
    {"value_type", value_type, METH_O, "value_type(Value): the type `value` makes (user.py registers it)"},
    {"value", (PyCFunction)(void (*)(void))value, METH_FASTCALL, "value(v, q, m, t) -> Value (user.new_value)"},
    {"uuid_hex", uuid_hex, METH_O, "uuid_hex(name: bytes) -> str: a version 5 UUID's hex (ids._uuid_of)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_native",
    .m_doc = "the domain's hot paths in C: a user's state and message as JSON, a Value, a name-based id",
    .m_size = -1, .m_methods = methods,
};

static PyObject *interned(const char *s) {
    return PyUnicode_InternFromString(s);
}

PyMODINIT_FUNC PyInit__native(void) {
    init_escapes();
    init_device_fields();
    init_state_keys();
    init_pairs();
    init_flat();
    if (kept == NULL) {
        if ((kept = PyMem_Malloc(KEPT_START)) == NULL) {
            return PyErr_NoMemory();
        }
        kept_cap = KEPT_START;
    }
    if ((LAST_SEEN_AT = interned("lastSeenAt")) == NULL || (SESSIONS_COUNT = interned("sessionsCount")) == NULL
        || (NAME = interned("name")) == NULL || (EMAIL = interned("profile.email")) == NULL
        || (MOBILE_NUMBER = interned("profile.mobileNumber")) == NULL) {
        return NULL;
    }
    for (int i = 0; i < N_DEVICE; i++) {
        if ((DEVICE_KEY[i] = interned(DEVICE_KEYS[i])) == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
