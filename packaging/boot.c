/* The frozen hako's start, run by ld.so as a constructor of lib/libhakofrozen.so
 * before the interpreter's own main() (packaging/README.md, "Start-up").
 *
 * The launcher execs the cached interpreter as
 *     <cache>/hako -I -S -X utf8 -c "import _hako_entry" ARGS...
 * Exactly that command line is taken over here; any other (a bare interpreter,
 * `-c` of something else) is left to CPython's main(): this returns at once,
 * and so does it when anything here is missing (the command line then means
 * the same to CPython's main).
 *
 * Started so, the interpreter is configured as `-I -S -X utf8` would (isolated,
 * no site, UTF-8 mode) but initialised in two phases (PEP 587's _init_main=0):
 * the core (types, builtins, sys, the built-in and frozen importers) first,
 * which is all the hot verbs need, then `_hako_entry`, a frozen module, is
 * imported. It calls `_hakoboot.finish()` (the rest: path configuration, the
 * path-based importers, codecs, sys.std* streams, signal handlers) before any
 * verb that needs more, and whenever a hot verb leaves its ordinary path.
 * Skipping the second phase saves ~2.4 ms per call here: about half of the
 * interpreter's start. The C code only configures and starts the interpreter;
 * every decision about verbs is Python (packaging/entry.py).
 */
#include <Python.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* the launcher's command line up to the caller's arguments (launcher.c run()) */
static const char *const LAUNCH[] = {"-I", "-S", "-X", "utf8", "-c", "import _hako_entry"};
#define NLAUNCH (sizeof(LAUNCH) / sizeof(LAUNCH[0]))

static int core_only = 1;
static int debug;   /* HAKO_LAUNCHER_DEBUG: say which phases ran (tests look) */

static PyObject *boot_finish(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (core_only) {
        if (debug)
            fputs("hako: boot: completing the interpreter's start\n", stderr);
        PyStatus st = _Py_InitializeMain();
        if (PyStatus_Exception(st)) {
            const char *why = st.err_msg ? st.err_msg : "?";
            if (PyErr_Occurred())   /* what went wrong inside, as the cause */
                _PyErr_FormatFromCause(PyExc_RuntimeError, "interpreter start failed: %s", why);
            else
                PyErr_Format(PyExc_RuntimeError, "interpreter start failed: %s", why);
            return NULL;
        }
        core_only = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *boot_is_core(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(core_only);
}

static PyMethodDef boot_methods[] = {
    {"finish", boot_finish, METH_NOARGS, "complete the interpreter's initialisation"},
    {"is_core", boot_is_core, METH_NOARGS, "only the core is initialised"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef boot_module = {
    PyModuleDef_HEAD_INIT, "_hakoboot", NULL, -1, boot_methods, NULL, NULL, NULL, NULL,
};

static int boot_argc;
static char **boot_argv;

static PyObject *boot_init(void)
{
    PyObject *m = PyModule_Create(&boot_module);
    if (m == NULL)
        return NULL;
    PyObject *argv = PyList_New(0);
    if (argv == NULL)
        goto fail;
    for (int i = 0; i < boot_argc; i++) {
        PyObject *s = PyUnicode_DecodeFSDefault(boot_argv[i]);
        if (s == NULL || PyList_Append(argv, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(argv);
            goto fail;
        }
        Py_DECREF(s);
    }
    if (PyModule_AddObject(m, "argv", argv) < 0) {
        Py_DECREF(argv);
        goto fail;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}

static void check(PyStatus st)
{
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);
}

void hako_boot(int argc, char **argv)
{
    if (argc < 1 + (int)NLAUNCH || getenv("HAKO_BOOT_OFF"))
        return;
    for (size_t i = 0; i < NLAUNCH; i++)
        if (strcmp(argv[1 + i], LAUNCH[i]) != 0)
            return;             /* an ordinary interpreter command line */
    /* argv as the verbs see it: "hako" then the caller's arguments (what
       `-c` and _hako_entry made of it before) */
    argv[NLAUNCH] = "hako";
    boot_argc = argc - (int)NLAUNCH;
    boot_argv = argv + NLAUNCH;
    const char *dbg = getenv("HAKO_LAUNCHER_DEBUG");
    debug = dbg && *dbg;
    if (debug)
        fputs("hako: boot: the interpreter's core only\n", stderr);
    /* as CPython's main does before anything (and its signal set-up would):
       a write to a closed pipe is an EPIPE error, not death by SIGPIPE */
    signal(SIGPIPE, SIG_IGN);
    if (PyImport_AppendInittab("_hakoboot", boot_init) < 0)
        _exit(120);

    PyPreConfig pre;
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.utf8_mode = 1;          /* -X utf8 */
    check(Py_PreInitialize(&pre));

    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);   /* -I */
    config.site_import = 0;                 /* -S */
    config.install_signal_handlers = 1;     /* as the command line had it (SIGINT ->
                                               KeyboardInterrupt), once the start completes */
    config.pathconfig_warnings = 0;
    config._init_main = 0;
    /* the executable's real path: the prefix (and hako._pth) are found from it */
    check(PyConfig_SetBytesString(&config, &config.program_name, argv[0]));
    check(PyConfig_SetBytesArgv(&config, boot_argc, boot_argv));
    check(Py_InitializeFromConfig(&config));
    PyConfig_Clear(&config);

    PyObject *entry = PyImport_ImportModule("_hako_entry");
    if (entry == NULL) {
        PyErr_Print();          /* SystemExit: exits with its code */
        _exit(1);
    }
    Py_DECREF(entry);
    exit(Py_FinalizeEx() < 0 ? 120 : 0);
}
