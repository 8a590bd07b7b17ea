/* Optional C versions of three hot loops of the import engine (xtmail.sync.mail.textops).
 *
 * Each function returns exactly what its pure-Python twin in textops.py returns; the tests
 * compare the two on random and real text. Where this module is not built (no C compiler),
 * textops uses the Python versions: the same results, slower. Why these three: they are
 * where preparing a message spent its time once the MIME walk was tuned (profiles in
 * docs/benchmarks.md): splitting a body into distinct words creates an object for every
 * word in Python, and str.replace / bytes.replace are several times slower than a memchr
 * loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* -- distinct_words --------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t start;
    Py_ssize_t len; /* 0: an empty slot (words are never empty) */
    uint64_t hash;
} Slot;

typedef struct {
    Slot *slots;
    size_t mask; /* size - 1; the size is a power of two */
    size_t used;
} Table;

/* A hash of a word's bytes from its size and its first and last eight bytes: cheap, and
 * good enough for the table, which compares the whole word on a match. */
static inline uint64_t
word_hash(const char *p, size_t size)
{
    uint64_t head = 0, tail = 0;
    if (size >= 8) {
        memcpy(&head, p, 8);
        memcpy(&tail, p + size - 8, 8);
    }
    else {
        memcpy(&head, p, size);
    }
    uint64_t h = (head ^ (tail * 0x9E3779B97F4A7C15ULL) ^ size) * 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 29);
}

static int
table_grow(Table *table)
{
    size_t size = (table->mask + 1) * 2;
    Slot *slots = PyMem_Calloc(size, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= table->mask; i++) {
        if (table->slots[i].len) {
            size_t j = table->slots[i].hash & (size - 1);
            while (slots[j].len)
                j = (j + 1) & (size - 1);
            slots[j] = table->slots[i];
        }
    }
    PyMem_Free(table->slots);
    table->slots = slots;
    table->mask = size - 1;
    return 0;
}

/* Whitespace as str.split() sees it, for the one-byte kind (Latin-1: NEL and NBSP too). */
static unsigned char ucs1_space[256];

#define IS_SPACE_UCS1(ch) (ucs1_space[(ch)])
#define IS_SPACE_WIDE(ch) Py_UNICODE_ISSPACE(ch)

/* One scan per string kind, so that the inner loops read the characters directly. Appends
 * each word not seen before to `words`; 0 on success, -1 with an exception set. */
#define DEFINE_SCAN(NAME, CHAR, IS_SPACE)                                                 \
    static int NAME(PyObject *text, const CHAR *s, Py_ssize_t n, PyObject *words,         \
                    Table *table)                                                         \
    {                                                                                     \
        Py_ssize_t i = 0;                                                                 \
        while (i < n) {                                                                   \
            while (i < n && IS_SPACE(s[i]))                                               \
                i++;                                                                      \
            if (i >= n)                                                                   \
                break;                                                                    \
            Py_ssize_t start = i;                                                         \
            while (i < n && !IS_SPACE(s[i]))                                              \
                i++;                                                                      \
            Py_ssize_t len = i - start;                                                   \
            size_t size = (size_t)len * sizeof(CHAR);                                     \
            uint64_t hash = word_hash((const char *)(s + start), size);                   \
            size_t j = hash & table->mask;                                                \
            int seen = 0;                                                                 \
            while (table->slots[j].len) {                                                 \
                Slot *slot = &table->slots[j];                                            \
                if (slot->hash == hash && slot->len == len                                \
                    && memcmp(s + slot->start, s + start, size) == 0) {                   \
                    seen = 1;                                                             \
                    break;                                                                \
                }                                                                         \
                j = (j + 1) & table->mask;                                                \
            }                                                                             \
            if (seen)                                                                     \
                continue;                                                                 \
            table->slots[j].start = start;                                                \
            table->slots[j].len = len;                                                    \
            table->slots[j].hash = hash;                                                  \
            PyObject *word = PyUnicode_Substring(text, start, i);                         \
            if (word == NULL)                                                             \
                return -1;                                                                \
            int appended = PyList_Append(words, word);                                    \
            Py_DECREF(word);                                                              \
            if (appended < 0)                                                             \
                return -1;                                                                \
            if (++table->used * 2 > table->mask && table_grow(table) < 0)                 \
                return -1;                                                                \
        }                                                                                 \
        return 0;                                                                         \
    }

DEFINE_SCAN(scan_ucs1, Py_UCS1, IS_SPACE_UCS1)
DEFINE_SCAN(scan_ucs2, Py_UCS2, IS_SPACE_WIDE)
DEFINE_SCAN(scan_ucs4, Py_UCS4, IS_SPACE_WIDE)

PyDoc_STRVAR(distinct_words_doc,
"distinct_words(text, /)\n--\n\n"
"The distinct words of ``text`` split on whitespace, in order of first appearance:\n"
"``list(dict.fromkeys(text.split()))``.");

static PyObject *
distinct_words(PyObject *module, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "distinct_words() expects str, not %.100s",
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
    PyObject *words = PyList_New(0);
    if (words == NULL)
        return NULL;
    Table table = {PyMem_Calloc(256, sizeof(Slot)), 255, 0};
    if (table.slots == NULL) {
        Py_DECREF(words);
        return PyErr_NoMemory();
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const void *data = PyUnicode_DATA(text);
    int status;
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        status = scan_ucs1(text, (const Py_UCS1 *)data, n, words, &table);
        break;
    case PyUnicode_2BYTE_KIND:
        status = scan_ucs2(text, (const Py_UCS2 *)data, n, words, &table);
        break;
    default:
        status = scan_ucs4(text, (const Py_UCS4 *)data, n, words, &table);
        break;
    }
    PyMem_Free(table.slots);
    if (status < 0) {
        Py_DECREF(words);
        return NULL;
    }
    return words;
}

PyDoc_STRVAR(mapped_words_doc,
"mapped_words(text, table, /)\n--\n\n"
"The distinct words of ``text`` after mapping each character through ``table`` (256\n"
"bytes: the Latin-1 character each Latin-1 character becomes), in order of first\n"
"appearance; ``None`` where ``text`` holds a character above U+00FF.");

/* The search index's words in one pass: lower case and separators are a table lookup per
 * character (the table is built in Python from str.lower and the separator set), instead
 * of str.lower, str.translate and a join, each making a copy of the body. */
static PyObject *
mapped_words(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "mapped_words() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *text = args[0], *table_bytes = args[1];
    if (!PyUnicode_Check(text) || !PyBytes_Check(table_bytes)
        || PyBytes_GET_SIZE(table_bytes) != 256) {
        PyErr_SetString(PyExc_TypeError, "mapped_words() expects str and 256 bytes");
        return NULL;
    }
    const unsigned char *map = (const unsigned char *)PyBytes_AS_STRING(table_bytes);
    for (int ch = 0; ch < 128; ch++) {
        if (map[ch] >= 128) {
            PyErr_SetString(PyExc_ValueError, "mapped_words(): the table maps ASCII beyond it");
            return NULL;
        }
    }
    if (PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND)
        Py_RETURN_NONE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const Py_UCS1 *src = PyUnicode_1BYTE_DATA(text);
    /* The mapped text as a canonical str (ASCII where it is), so that the words cut from it
     * are canonical too. The table maps ASCII to ASCII (textops checks), so ASCII text is
     * mapped straight into its copy; other Latin-1 text may become ASCII or not. */
    PyObject *mapped;
    if (PyUnicode_IS_ASCII(text)) {
        mapped = PyUnicode_New(n, 127);
        if (mapped == NULL)
            return NULL;
        Py_UCS1 *out = PyUnicode_1BYTE_DATA(mapped);
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = map[src[i]];
    }
    else {
        Py_UCS1 *buffer = PyMem_Malloc((size_t)n);
        if (buffer == NULL)
            return PyErr_NoMemory();
        unsigned char high = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            buffer[i] = map[src[i]];
            high |= buffer[i];
        }
        mapped = PyUnicode_New(n, (high & 0x80) ? 255 : 127);
        if (mapped != NULL)
            memcpy(PyUnicode_1BYTE_DATA(mapped), buffer, (size_t)n);
        PyMem_Free(buffer);
        if (mapped == NULL)
            return NULL;
    }
    PyObject *words = distinct_words(module, mapped);
    Py_DECREF(mapped);
    return words;
}

/* -- line endings ------------------------------------------------------------------------ */

/* How many CR LF pairs `s[0:n]` holds, starting from its first CR at `cr`. */
static Py_ssize_t
count_crlf(const char *s, Py_ssize_t n, const char *cr)
{
    const char *end = s + n;
    Py_ssize_t pairs = 0;
    while (cr != NULL) {
        if (cr + 1 < end && cr[1] == '\n')
            pairs++;
        cr = memchr(cr + 1, '\r', (size_t)(end - cr - 1));
    }
    return pairs;
}

/* Copies `s[0:n]` to `d` without the CR of each CR LF pair; a CR alone becomes `lone`. */
static void
copy_without_crlf(const char *s, Py_ssize_t n, char *d, char lone)
{
    const char *end = s + n;
    const char *cr = memchr(s, '\r', (size_t)n);
    while (cr != NULL) {
        memcpy(d, s, (size_t)(cr - s));
        d += cr - s;
        if (!(cr + 1 < end && cr[1] == '\n'))
            *d++ = lone;
        s = cr + 1;
        cr = memchr(s, '\r', (size_t)(end - s));
    }
    memcpy(d, s, (size_t)(end - s));
}

PyDoc_STRVAR(crlf_to_lf_doc,
"crlf_to_lf(data, /)\n--\n\n"
"``data`` with every CR LF pair turned into LF; a CR alone stays:\n"
"``data.replace(b'\\r\\n', b'\\n')``.");

static PyObject *
crlf_to_lf(PyObject *module, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "crlf_to_lf() expects bytes, not %.100s",
                     Py_TYPE(data)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    const char *s = PyBytes_AS_STRING(data);
    const char *cr = memchr(s, '\r', (size_t)n);
    Py_ssize_t pairs = cr == NULL ? 0 : count_crlf(s, n, cr);
    if (pairs == 0)
        return Py_NewRef(data);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n - pairs);
    if (out == NULL)
        return NULL;
    copy_without_crlf(s, n, PyBytes_AS_STRING(out), '\r');
    return out;
}

PyDoc_STRVAR(newlines_to_lf_doc,
"newlines_to_lf(text, /)\n--\n\n"
"``text`` with every line ending (CR LF, or a CR alone) turned into LF:\n"
"``text.replace('\\r\\n', '\\n').replace('\\r', '\\n')``.");

#define DEFINE_NEWLINES(NAME, CHAR)                                                       \
    static void NAME(const CHAR *s, Py_ssize_t n, CHAR *d)                                \
    {                                                                                     \
        for (Py_ssize_t i = 0; i < n; i++) {                                              \
            CHAR ch = s[i];                                                               \
            if (ch == '\r') {                                                             \
                if (i + 1 < n && s[i + 1] == '\n')                                        \
                    continue;                                                             \
                ch = '\n';                                                                \
            }                                                                             \
            *d++ = ch;                                                                    \
        }                                                                                 \
    }

DEFINE_NEWLINES(newlines_ucs2, Py_UCS2)
DEFINE_NEWLINES(newlines_ucs4, Py_UCS4)

static PyObject *
newlines_to_lf(PyObject *module, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "newlines_to_lf() expects str, not %.100s",
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Py_ssize_t first = PyUnicode_FindChar(text, '\r', 0, n, 1);
    if (first == -2)
        return NULL;
    if (first == -1)
        return Py_NewRef(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t pairs = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        pairs = count_crlf((const char *)data, n, (const char *)data + first);
    }
    else {
        for (Py_ssize_t i = first; i + 1 < n; i++) {
            if (PyUnicode_READ(kind, data, i) == '\r'
                && PyUnicode_READ(kind, data, i + 1) == '\n')
                pairs++;
        }
    }
    /* Only CRs go or become LFs: every other character, and so the widest, stays. */
    PyObject *out = PyUnicode_New(n - pairs, PyUnicode_MAX_CHAR_VALUE(text));
    if (out == NULL)
        return NULL;
    void *d = PyUnicode_DATA(out);
    switch (kind) {
    case PyUnicode_1BYTE_KIND:
        copy_without_crlf((const char *)data, n, (char *)d, '\n');
        break;
    case PyUnicode_2BYTE_KIND:
        newlines_ucs2((const Py_UCS2 *)data, n, (Py_UCS2 *)d);
        break;
    default:
        newlines_ucs4((const Py_UCS4 *)data, n, (Py_UCS4 *)d);
        break;
    }
    return out;
}

/* -- module ------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"distinct_words", distinct_words, METH_O, distinct_words_doc},
    {"mapped_words", (PyCFunction)(void (*)(void))mapped_words, METH_FASTCALL, mapped_words_doc},
    {"crlf_to_lf", crlf_to_lf, METH_O, crlf_to_lf_doc},
    {"newlines_to_lf", newlines_to_lf, METH_O, newlines_to_lf_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "xtmail.sync._speedups",
    "C versions of hot text loops of the import engine; see xtmail.sync.textops.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    for (int ch = 0; ch < 256; ch++)
        ucs1_space[ch] = Py_UNICODE_ISSPACE((Py_UCS4)ch) ? 1 : 0;
    return PyModule_Create(&module);
}
