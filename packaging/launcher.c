/*
 * hako launcher: the single-file `dist/hako`.
 *
 * Layout of the file:  [this program][payload][trailer (64 bytes)]
 *   payload  zlib stream of a small archive of the PyInstaller onedir build
 *   trailer  "HAKOSFX1", u64 payload offset, u64 payload length,
 *            u64 archive length (inflated), 32-byte SHA-256 of the payload
 *
 * First call (per user and build): unpack into a private cache directory
 *   <cache root>/<first 32 hex digits of the payload's SHA-256>/
 * after checking the payload against its SHA-256, then record a stamp: the
 * inode, size, mode, link count, mtime and ctime of every unpacked
 * entry. Every call: walk to the cache with O_NOFOLLOW directory fds, check
 * owner and mode of every directory on the way, compare each entry with the
 * stamp (one fstatat each, ~20 us in all) and exec the cached executable
 * through the fd that was checked. Any write, chmod, chown, rename or
 * replacement changes an entry's ctime (which only the kernel sets), so a
 * modified cache is noticed before it is executed, moved away and unpacked
 * again. Hashing the 10 MB of the cache on every call instead would cost
 * ~60 ms; see packaging/README.md for the reasoning and the measurements.
 *
 * The launcher exports HAKO_LAUNCHER=<its own path> and HAKO_LAUNCHER_CACHE=<the
 * cache root it used> to the frozen hako (for hooks that run hako again).
 *
 * Cache root: $HAKO_CACHE_DIR, else /var/cache/hako for root (of the initial
 * user namespace), else $XDG_CACHE_HOME/hako or $HOME/.cache/hako (uid 0 of a
 * user namespace, e.g. under rootless Podman, is the user it maps to). The
 * root must be owned by the euid, with no group/other access for users (0700)
 * and no group/other write for root (0755, see DIR_MODE); every directory
 * above it must be owned by root or the euid and not writable by others
 * unless sticky. A cache root of root's (the overflow uid inside a user
 * namespace) that nobody else can write is used read-only by other uids:
 * checked the same way, never unpacked into. As root, unpacked files and
 * subdirectories get the immutable attribute (best effort), which even a root
 * container process without CAP_LINUX_IMMUTABLE cannot write through.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

extern char **environ;

#define TRAILER_MAGIC "HAKOSFX1"
#define ARCHIVE_MAGIC "HAKOARC1"
#define STAMP_MAGIC "hako-cache 3 "   /* 3: no owner in the entries, root's caches 0755 */
#define STAMP_NAME ".stamp"
#define EXE_NAME "hako"           /* the build's interpreter (packaging/layout.py) */
#define ENTRY_MODULE "_hako_entry" /* packaging/entry.py, as bytecode */
#define NAME_HEX 32          /* cache directory name: 128 bits of the hash */
#define GC_AGE (24 * 3600)   /* other builds unused this long are removed */
#define MAX_STAMP (1 << 20)

static uid_t euid;
static int host_root;   /* euid 0 in the initial user namespace */
static uid_t cache_owner;   /* owner of the cache root being tried: euid, or root's */
static int cache_readonly;  /* someone else's (root's) cache: verify and use, never write */
/* Users' caches are private (0700). Root's are root-owned and writable by no one
 * else but readable by all (0755, files 0555/0444): a container init in a user
 * namespace mapped to other host uids still reads (imports from) the build it
 * was forked from. The content is that of dist/hako, which is public anyway.
 * Root of a user namespace (rootless Podman) counts as the user it is. */
#define DIR_MODE (host_root ? 0755 : 0700)
#define EXE_MODE (host_root ? 0555 : 0500)
#define DATA_MODE (host_root ? 0444 : 0400)
#define FORBIDDEN_BITS (host_root ? 022 : 077)
static char hexhash[65];
static int verbose;

static void msg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hako: launcher: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void debug(const char *fmt, ...)
{
    if (!verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("hako: launcher: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hako: launcher: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ------------------------------------------------------------------ SHA-256 */

struct sha256 { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t n; };

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(struct sha256 *s, const uint8_t *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
    e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
    for (int i = 0; i < 64; i++) {
        t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256(const uint8_t *data, size_t len, uint8_t out[32])
{
    struct sha256 s = {{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}, 0, {0}, 0};
    size_t i = 0;
    for (; i + 64 <= len; i += 64)
        sha256_block(&s, data + i);
    uint8_t tail[128] = {0};
    size_t rest = len - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t tl = rest + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int k = 0; k < 8; k++)
        tail[tl - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha256_block(&s, tail);
    if (tl == 128)
        sha256_block(&s, tail + 64);
    for (int k = 0; k < 8; k++) {
        out[4 * k] = s.h[k] >> 24; out[4 * k + 1] = s.h[k] >> 16;
        out[4 * k + 2] = s.h[k] >> 8; out[4 * k + 3] = s.h[k];
    }
}

/* ------------------------------------------------------------------ helpers */

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int read_full(int fd, void *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *)buf + done, len - done, off + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = write(fd, (const char *)buf + done, len - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

/* One stamp line for an entry. The top directory is renamed into place after
 * stamping (which changes its ctime), so only its mode counts; everything
 * inside is stamped in full. Owners are checked separately against the euid,
 * not recorded: rootless Podman runs us as root of a user namespace, where the
 * same files show another uid (chown changes the ctime anyway). */
static int fingerprint(char *out, size_t cap, const char *path, const struct stat *st, int top)
{
    if (top)
        return snprintf(out, cap, "%s %o\n", path, (unsigned)st->st_mode);
    return snprintf(out, cap, "%s %o %lu %lld %llu %lld.%09ld %lld.%09ld\n", path,
                    (unsigned)st->st_mode, (unsigned long)st->st_nlink, (long long)st->st_size,
                    (unsigned long long)st->st_ino,
                    (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
                    (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
}

/* Relative, no empty/./.. components, no characters the stamp cannot hold. */
static int safe_relpath(const char *p)
{
    if (!*p || *p == '/')
        return 0;
    for (const char *c = p; *c; c++)
        if (*c <= ' ' || *c == 0x7f)
            return 0;
    const char *s = p;
    while (*s) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return 0;
        if (!e)
            break;
        s = e + 1;
        if (!*s)
            return 0;
    }
    return 1;
}

static void set_immutable(int fd, int on)
{
    int flags;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0)
        return;
    int want = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    if (want != flags)
        (void)ioctl(fd, FS_IOC_SETFLAGS, &want);
}

/* rm -rf of dirfd/name, clearing the immutable attribute on the way. */
static void remove_tree(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd >= 0) {
        struct stat st;
        if (host_root)
            set_immutable(fd, 0);
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            int dfd = dup(fd);
            DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
            if (d) {
                struct dirent *de;
                while ((de = readdir(d)) != NULL) {
                    if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        remove_tree(fd, de->d_name);
                }
                closedir(d);
            } else if (dfd >= 0) {
                close(dfd);
            }
            close(fd);
            unlinkat(dirfd, name, AT_REMOVEDIR);
            return;
        }
        close(fd);
    }
    if (unlinkat(dirfd, name, 0) != 0 && errno == EISDIR)
        unlinkat(dirfd, name, AT_REMOVEDIR);
}

/* ------------------------------------------------------------- cache root */

/* Inside a user namespace (rootless Podman runs runtimes as uid 0 in one), the
 * host's root shows as the overflow uid: trust it for the directories above the
 * cache (/, /home, ...) there, as root is trusted outside. */
static int initial_userns(void)
{
    static int initial = -1;
    if (initial < 0) {
        char map[128] = "";
        int fd = open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, map, sizeof(map) - 1) : -1;
        if (fd >= 0)
            close(fd);
        unsigned long a, b, c;
        initial = n > 0 && (map[n] = '\0', sscanf(map, "%lu %lu %lu", &a, &b, &c) == 3) &&
                  a == 0 && b == 0 && c == 4294967295UL;
    }
    return initial;
}

static int trusted_owner(uid_t uid)
{
    static long overflow = -2;
    if (uid == 0 || uid == euid)
        return 1;
    if (overflow == -2) {
        overflow = -1;
        int fd = initial_userns() ? -1 : open("/proc/sys/kernel/overflowuid", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char buf[32] = "";
            if (read(fd, buf, sizeof(buf) - 1) > 0)
                overflow = strtol(buf, NULL, 10);
            close(fd);
        }
    }
    return overflow >= 0 && uid == (uid_t)overflow;
}

static int dir_ok(int fd, const char *what, int final, char *why, size_t whylen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "%s: %s", what, strerror(errno));
        return 0;
    }
    if (final) {
        cache_owner = euid;
        cache_readonly = 0;
        if (!trusted_owner(st.st_uid)) {
            snprintf(why, whylen, "%s is owned by uid %u, not %u", what, (unsigned)st.st_uid,
                     (unsigned)euid);
            return 0;
        }
        if (st.st_uid != euid) {
            /* root's cache (the host's root shows as the overflow uid in a user
             * namespace, e.g. in a hook run in a container's namespaces): usable as
             * it is, checked like our own, never written */
            if (st.st_mode & 022) {
                snprintf(why, whylen, "%s (uid %u) is writable by group or others", what,
                         (unsigned)st.st_uid);
                return 0;
            }
            cache_owner = st.st_uid;
            cache_readonly = 1;
            return 1;
        }
        if ((st.st_mode & FORBIDDEN_BITS) || (host_root && (st.st_mode & 0777) != 0755)) {
            /* ours: fix it (a directory made by hand or under an old umask) */
            int rfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            int ok = rfd >= 0 && fchmod(rfd, DIR_MODE) == 0;
            if (rfd >= 0)
                close(rfd);
            if (!ok) {
                snprintf(why, whylen, "%s has mode %o and cannot be made %o", what,
                         (unsigned)(st.st_mode & 07777), (unsigned)DIR_MODE);
                return 0;
            }
        }
        return 1;
    }
    if (!trusted_owner(st.st_uid)) {
        snprintf(why, whylen, "%s is owned by uid %u (neither root nor %u)", what,
                 (unsigned)st.st_uid, (unsigned)euid);
        return 0;
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
        snprintf(why, whylen, "%s is writable by group or others", what);
        return 0;
    }
    return 1;
}

/* Open an absolute directory path one component at a time, never following a
 * symlink, checking every directory; create missing components. The
 * path is canonicalised first, so symlinks in it (/home -> /usr/home) are
 * resolved once and the walk then checks what they pointed to. */
static int open_cache_root(const char *path, char canon_out[PATH_MAX], char *why, size_t whylen)
{
    char canon[PATH_MAX], rest[PATH_MAX], probe[PATH_MAX];
    if (path[0] != '/') {
        snprintf(why, whylen, "%s: not an absolute path", path);
        return -1;
    }
    if (strlen(path) >= sizeof(probe)) {
        snprintf(why, whylen, "path too long");
        return -1;
    }
    /* longest existing prefix -> realpath, the rest appended */
    strcpy(probe, path);
    rest[0] = '\0';
    for (;;) {
        if (realpath(probe, canon))
            break;
        char *slash = strrchr(probe, '/');
        if (!slash || slash == probe) {
            strcpy(canon, "/");
            snprintf(rest, sizeof(rest), "%s", path + 1);
            break;
        }
        *slash = '\0';
        snprintf(rest, sizeof(rest), "%s", path + strlen(probe) + 1);
    }
    char full[PATH_MAX];
    if (snprintf(full, sizeof(full), "%s%s%s", canon, (rest[0] && strcmp(canon, "/")) ? "/" : "",
                 rest) >= (int)sizeof(full)) {
        snprintf(why, whylen, "path too long");
        return -1;
    }

    strcpy(canon_out, full);
    int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || !dir_ok(fd, "/", 0, why, whylen)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char walked[PATH_MAX] = "";
    char *save = NULL;
    char *comp = strtok_r(full, "/", &save);
    while (comp) {
        char *next = strtok_r(NULL, "/", &save);
        if (!strcmp(comp, ".") || !strcmp(comp, "..")) {
            snprintf(why, whylen, "%s: unexpected . or ..", path);
            close(fd);
            return -1;
        }
        size_t wl = strlen(walked);
        snprintf(walked + wl, sizeof(walked) - wl, "/%s", comp);
        int nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT) {
            /* root: 0755 (a missing /var/cache as usual, the cache as above);
             * users: 0700 (~/.cache private, as XDG asks) */
            mode_t mode = DIR_MODE;
            if (mkdirat(fd, comp, mode) != 0 && errno != EEXIST) {
                snprintf(why, whylen, "creating %s: %s", walked, strerror(errno));
                close(fd);
                return -1;
            }
            nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (nfd < 0) {
            snprintf(why, whylen, "%s: %s", walked,
                     errno == ELOOP || errno == ENOTDIR ? "not a directory (or a symlink)"
                                                        : strerror(errno));
            close(fd);
            return -1;
        }
        close(fd);
        fd = nfd;
        if (!dir_ok(fd, walked, next == NULL, why, whylen)) {
            close(fd);
            return -1;
        }
        comp = next;
    }
    return fd;
}

/* The host uid behind the euid (they differ in a user namespace: a hook run in a
 * rootless container's namespaces is uid 0 there), for the passwd lookup. */
static uid_t host_uid(void)
{
    if (initial_userns())
        return euid;
    FILE *f = fopen("/proc/self/uid_map", "re");
    unsigned long inside, outside, count;
    uid_t uid = euid;
    while (f && fscanf(f, "%lu %lu %lu", &inside, &outside, &count) == 3) {
        if (euid >= inside && euid - inside < count) {
            uid = (uid_t)(outside + (euid - inside));
            break;
        }
    }
    if (f)
        fclose(f);
    return uid;
}

static int candidates(const char *out[4], char bufs[4][PATH_MAX])
{
    int n = 0;
    const char *env = getenv("HAKO_CACHE_DIR");
    if (env && *env) {
        out[n++] = env;
        return n;
    }
    if (host_root)
        out[n++] = "/var/cache/hako";
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && xdg[0] == '/') {
        snprintf(bufs[n], PATH_MAX, "%s/hako", xdg);
        out[n] = bufs[n];
        n++;
    }
    const char *home = getenv("HOME");
    if (!home || home[0] != '/') {
        struct passwd *pw = getpwuid(host_uid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (home && home[0] == '/' && strcmp(home, "/")) {
        snprintf(bufs[n], PATH_MAX, "%s/.cache/hako", home);
        out[n] = bufs[n];
        n++;
    }
    return n;
}

/* ------------------------------------------------------------- verification */

/* The next number of a stamp line (base 8 or 10) followed by *stop*. */
static int stamp_num(const char **s, unsigned base, char stop, unsigned long long *out)
{
    const char *p = *s;
    unsigned long long v = 0;
    while (*p >= '0' && (unsigned)(*p - '0') < base)
        v = v * base + (unsigned)(*p++ - '0');
    if (p == *s || *p != stop)
        return 0;
    *out = v;
    *s = p + (stop != '\0');
    return 1;
}

/* Does the rest of a stamp line (after "<path> ") describe *st*? The same
 * fields fingerprint() writes, compared as numbers: formatting ~330 lines with
 * snprintf on every call cost more than all the fstatat calls. */
static int matches(const char *s, const struct stat *st, int top)
{
    unsigned long long mode, nlink, size, ino, ms, mn, cs, cn;
    if (top)
        return stamp_num(&s, 8, '\0', &mode) && mode == (unsigned)st->st_mode;
    return stamp_num(&s, 8, ' ', &mode) && stamp_num(&s, 10, ' ', &nlink) &&
           stamp_num(&s, 10, ' ', &size) && stamp_num(&s, 10, ' ', &ino) &&
           stamp_num(&s, 10, '.', &ms) && stamp_num(&s, 10, ' ', &mn) &&
           stamp_num(&s, 10, '.', &cs) && stamp_num(&s, 10, '\0', &cn) &&
           mode == (unsigned)st->st_mode && nlink == (unsigned long long)st->st_nlink &&
           st->st_size >= 0 && size == (unsigned long long)st->st_size &&
           ino == (unsigned long long)st->st_ino && st->st_mtim.tv_sec >= 0 &&
           ms == (unsigned long long)st->st_mtim.tv_sec &&
           mn == (unsigned long long)st->st_mtim.tv_nsec && st->st_ctim.tv_sec >= 0 &&
           cs == (unsigned long long)st->st_ctim.tv_sec &&
           cn == (unsigned long long)st->st_ctim.tv_nsec;
}

/* O_PATH descriptors of the build's directories, so that each entry is looked
 * up by its last component (one path walk per directory, not per file). Each
 * directory has its own stamp line, which catches one replaced by a symlink. */
#define MAX_DIRS 128
struct dir_cache { int n; int fd[MAX_DIRS]; const char *name[MAX_DIRS]; size_t len[MAX_DIRS]; };

static int dir_fd(struct dir_cache *c, int top, const char *path, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        *base = path;
        return top;
    }
    size_t len = (size_t)(slash - path);
    *base = slash + 1;
    for (int i = c->n - 1; i >= 0; i--)
        if (c->len[i] == len && !memcmp(c->name[i], path, len))
            return c->fd[i];
    if (c->n == MAX_DIRS) {   /* not expected: look it up by the whole path */
        *base = path;
        return top;
    }
    char dir[PATH_MAX];
    memcpy(dir, path, len);
    dir[len] = '\0';
    int fd = openat(top, dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    c->fd[c->n] = fd;
    c->name[c->n] = path;   /* in the stamp buffer, which outlives the cache */
    c->len[c->n] = len;
    c->n++;
    return fd;
}

/* 0: the cache entry matches its stamp; the checked executable is in *exefd. */
static int verify(int rootfd, const char *name, int *exefd, char *why, size_t whylen)
{
    int dfd = openat(rootfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        snprintf(why, whylen, "%s", errno == ENOENT ? "not unpacked yet" : strerror(errno));
        return errno == ENOENT ? -2 : -1;
    }
    int sfd = openat(dfd, STAMP_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (sfd < 0 || fstat(sfd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != cache_owner ||
        (st.st_mode & 022) || st.st_size <= 0 || st.st_size > MAX_STAMP) {
        snprintf(why, whylen, "missing or unsafe stamp");
        if (sfd >= 0)
            close(sfd);
        close(dfd);
        return -1;
    }
    char *stamp = malloc((size_t)st.st_size + 1);
    if (!stamp || read_full(sfd, stamp, (size_t)st.st_size, 0) != 0) {
        snprintf(why, whylen, "cannot read the stamp");
        free(stamp);
        close(sfd);
        close(dfd);
        return -1;
    }
    close(sfd);
    stamp[st.st_size] = '\0';

    int rc = -1, have_exe = 0, have_top = 0;
    struct dir_cache dirs;
    dirs.n = 0;
    char *p = stamp, *nl = strchr(p, '\n');
    if (nl && !strncmp(p, "hako-cache ", 11) && strncmp(p, STAMP_MAGIC, strlen(STAMP_MAGIC))) {
        snprintf(why, whylen, "unpacked by another version of the launcher");
        rc = -2;   /* not tampering: unpack again quietly */
        goto out;
    }
    if (!nl || strncmp(p, STAMP_MAGIC, strlen(STAMP_MAGIC)) ||
        (size_t)(nl - p) != strlen(STAMP_MAGIC) + 64 ||
        strncmp(p + strlen(STAMP_MAGIC), hexhash, 64)) {
        snprintf(why, whylen, "stamp is for another build");
        goto out;
    }
    for (p = nl + 1; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl) {
            snprintf(why, whylen, "truncated stamp");
            goto out;
        }
        *nl = '\0';
        char *sp = strchr(p, ' ');
        if (!sp) {
            snprintf(why, whylen, "malformed stamp");
            goto out;
        }
        *sp = '\0';
        int top = !strcmp(p, ".");
        if (!top && !safe_relpath(p)) {
            snprintf(why, whylen, "malformed stamp path");
            goto out;
        }
        struct stat es;
        const char *base = p;
        int at = top ? dfd : dir_fd(&dirs, dfd, p, &base);
        if (at < 0 || fstatat(at, top ? "" : base, &es, top ? AT_EMPTY_PATH : AT_SYMLINK_NOFOLLOW) != 0) {
            snprintf(why, whylen, "%s: %s", p, strerror(errno));
            goto out;
        }
        if (es.st_uid != cache_owner) {
            snprintf(why, whylen, "%s is owned by uid %u", p, (unsigned)es.st_uid);
            goto out;
        }
        if (!matches(sp + 1, &es, top)) {
            snprintf(why, whylen, "%s changed since it was unpacked", p);
            goto out;
        }
        *sp = ' ';
        if (top) {
            have_top = 1;
            if (es.st_mode & (cache_readonly ? 022 : FORBIDDEN_BITS)) {
                snprintf(why, whylen, "directory is not private");
                goto out;
            }
        }
        if (!strncmp(p, EXE_NAME " ", strlen(EXE_NAME) + 1)) {
            int fd = openat(dfd, EXE_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            struct stat xs;
            if (fd < 0 || fstat(fd, &xs) != 0 || xs.st_ino != es.st_ino ||
                xs.st_dev != es.st_dev || xs.st_ctim.tv_sec != es.st_ctim.tv_sec ||
                xs.st_ctim.tv_nsec != es.st_ctim.tv_nsec) {
                if (fd >= 0)
                    close(fd);
                snprintf(why, whylen, "%s changed while being checked", EXE_NAME);
                goto out;
            }
            if (*exefd >= 0)
                close(*exefd);
            *exefd = fd;
            have_exe = 1;
        }
    }
    if (!have_exe || !have_top) {
        snprintf(why, whylen, "incomplete stamp");
        goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < dirs.n; i++)
        close(dirs.fd[i]);
    if (rc != 0 && *exefd >= 0) {
        close(*exefd);
        *exefd = -1;
    }
    free(stamp);
    close(dfd);
    return rc;
}

/* ---------------------------------------------------------------- unpacking */

struct entry { char type; unsigned mode; char *path; };

static int stamp_tree(int tfd, struct entry *ents, size_t n, int wfd)
{
    char line[PATH_MAX + 256];
    struct stat st;
    int len = snprintf(line, sizeof(line), "%s%s\n", STAMP_MAGIC, hexhash);
    if (write_full(wfd, line, (size_t)len) != 0 || fstat(tfd, &st) != 0)
        return -1;
    len = fingerprint(line, sizeof(line), ".", &st, 1);
    if (write_full(wfd, line, (size_t)len) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (fstatat(tfd, ents[i].path, &st, AT_SYMLINK_NOFOLLOW) != 0)
            return -1;
        len = fingerprint(line, sizeof(line), ents[i].path, &st, 0);
        if (len <= 0 || (size_t)len >= sizeof(line) || write_full(wfd, line, (size_t)len) != 0)
            return -1;
    }
    return 0;
}

static void unpack(int rootfd, const char *name)
{
    /* the payload, checked against its hash before anything is written */
    int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    struct stat st;
    uint8_t tr[64];
    if (self < 0 || fstat(self, &st) != 0 || st.st_size < 64 ||
        read_full(self, tr, 64, st.st_size - 64) != 0)
        die("cannot read my own executable: %s", strerror(errno));
    uint64_t off = le64(tr + 8), len = le64(tr + 16), rawlen = le64(tr + 24);
    if (off + len + 64 != (uint64_t)st.st_size || rawlen > (1ULL << 31))
        die("corrupt trailer");
    uint8_t *payload = malloc(len), digest[32];
    if (!payload || read_full(self, payload, len, (off_t)off) != 0)
        die("cannot read the payload");
    close(self);
    sha256(payload, len, digest);
    if (memcmp(digest, tr + 32, 32))
        die("the payload does not match its SHA-256: this executable is damaged");
    uint8_t *raw = malloc(rawlen ? rawlen : 1);
    uLongf rl = (uLongf)rawlen;
    if (!raw || uncompress(raw, &rl, payload, (uLong)len) != Z_OK || rl != rawlen)
        die("cannot inflate the payload");
    free(payload);

    char tmp[NAME_HEX + 64];
    snprintf(tmp, sizeof(tmp), ".tmp-%s-%d", name, (int)getpid());
    remove_tree(rootfd, tmp);
    if (mkdirat(rootfd, tmp, DIR_MODE) != 0)
        die("creating %s: %s", tmp, strerror(errno));
    int tfd = openat(rootfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (tfd < 0)
        die("opening %s: %s", tmp, strerror(errno));

    size_t cap = 64, n = 0;
    struct entry *ents = malloc(cap * sizeof(*ents));
    uint8_t *p = raw, *end = raw + rawlen;
    if (rawlen < 8 || memcmp(p, ARCHIVE_MAGIC, 8))
        die("bad archive");
    p += 8;
    while (p < end) {
        /* type u8, pad u8, mode u16, path length u32, size u64, path, data */
        if (end - p < 16)
            die("truncated archive");
        char type = (char)p[0];
        unsigned mode = p[2] | p[3] << 8;
        uint32_t pl = p[4] | p[5] << 8 | p[6] << 16 | (uint32_t)p[7] << 24;
        uint64_t size = le64(p + 8);
        p += 16;
        if (type == 'e')
            break;
        if (pl == 0 || pl >= PATH_MAX || (uint64_t)(end - p) < pl ||
            (uint64_t)(end - p) - pl < size)
            die("truncated archive");
        char *path = strndup((char *)p, pl);
        p += pl;
        if (!path || strlen(path) != pl || !safe_relpath(path) || !strcmp(path, STAMP_NAME))
            die("unsafe path in archive");
        if (type == 'd') {
            if (mkdirat(tfd, path, DIR_MODE) != 0)
                die("unpacking %s: %s", path, strerror(errno));
        } else if (type == 'f') {
            int fd = openat(tfd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd < 0 || write_full(fd, p, size) != 0 ||
                fchmod(fd, (mode & 0111) ? EXE_MODE : DATA_MODE) != 0 || close(fd) != 0)
                die("unpacking %s: %s", path, strerror(errno));
            p += size;
        } else {
            die("bad archive entry type");
        }
        if (n == cap) {
            cap *= 2;
            ents = realloc(ents, cap * sizeof(*ents));
            if (!ents)
                die("out of memory");
        }
        ents[n].type = type;
        ents[n].mode = mode;
        ents[n].path = path;
        n++;
    }
    free(raw);
    int found_exe = 0;
    for (size_t i = 0; i < n; i++)
        found_exe |= ents[i].type == 'f' && !strcmp(ents[i].path, EXE_NAME);
    if (!found_exe)
        die("archive has no %s", EXE_NAME);

    if (host_root) {
        /* immutable even to a root container process (no CAP_LINUX_IMMUTABLE);
         * the stamp records the resulting ctimes */
        for (size_t i = n; i-- > 0;) {
            int fd = openat(tfd, ents[i].path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0) {
                set_immutable(fd, 1);
                close(fd);
            }
        }
    }
    int wfd = openat(tfd, STAMP_NAME, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     DATA_MODE);
    if (wfd < 0 || stamp_tree(tfd, ents, n, wfd) != 0 || fsync(wfd) != 0)
        die("writing the stamp: %s", strerror(errno));
    if (host_root)
        set_immutable(wfd, 1);
    close(wfd);
    syncfs(tfd);
    close(tfd);
    for (size_t i = 0; i < n; i++)
        free(ents[i].path);
    free(ents);
    if (renameat(rootfd, tmp, rootfd, name) != 0) {
        int e = errno;
        remove_tree(rootfd, tmp);
        if (e != EEXIST && e != ENOTEMPTY)
            die("renaming %s to %s: %s", tmp, name, strerror(e));
    }
}

/* Is a process running an executable from rootfd/name? (A long `hako run`
 * still imports from its build: never remove it under its feet.) */
static int in_use(int rootfd, const char *name)
{
    char link[300], root[PATH_MAX], prefix[PATH_MAX + NAME_HEX + 80], exe[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", rootfd);
    ssize_t n = readlink(link, root, sizeof(root) - 1);
    if (n <= 0)
        return 1;
    root[n] = '\0';
    int pl = snprintf(prefix, sizeof(prefix), "%s/%s/", root, name);
    DIR *d = opendir("/proc");
    if (!d)
        return 1;
    int used = 0;
    struct dirent *de;
    while (!used && (de = readdir(d)) != NULL) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(link, sizeof(link), "/proc/%s/exe", de->d_name);
        n = readlink(link, exe, sizeof(exe) - 1);
        if (n <= 0)
            continue;
        exe[n] = '\0';
        used = !strncmp(exe, prefix, (size_t)pl);
    }
    closedir(d);
    return used;
}

/* Remove dead temporaries, moved-away caches and builds unused for a day,
 * unless a process still runs from them. */
static void collect_garbage(int rootfd, const char *keep)
{
    int fd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        int junk = !strncmp(nm, ".tmp-", 5) || !strncmp(nm, ".stale-", 7);
        int build = strlen(nm) == NAME_HEX && strspn(nm, "0123456789abcdef") == NAME_HEX &&
                    strcmp(nm, keep);
        if (build) {
            char sp[NAME_HEX + 16 + 256];
            struct stat st;
            snprintf(sp, sizeof(sp), "%s/%s", nm, STAMP_NAME);
            time_t last = 0;
            if (fstatat(rootfd, sp, &st, AT_SYMLINK_NOFOLLOW) == 0)
                last = st.st_atime > st.st_mtime ? st.st_atime : st.st_mtime;
            build = now - last > GC_AGE;
        }
        if ((junk || build) && strncmp(nm, ".tmp-", 5) && in_use(rootfd, nm)) {
            debug("keeping %s: in use", nm);
            continue;
        }
        if (junk || build) {
            debug("removing %s", nm);
            remove_tree(rootfd, nm);
        }
    }
    closedir(d);
}

/* -------------------------------------------------------------------- main */

/* Run the build's interpreter (packaging/layout.py) on hako's entry module:
 *   <root>/<build>/hako -I -S -X utf8 -c "import _hako_entry" ARGS...
 * The file executed is the descriptor that was checked; argv[0] names the
 * same file by its canonical path, from which the interpreter finds its
 * prefix (the os.pyc landmark) and hako._pth (isolated, no site, sys.path =
 * the build's lib/python3.x only). */
static _Noreturn void run(int exefd, const char *root, const char *name, int argc, char **argv)
{
    static char exe[PATH_MAX];
    if (snprintf(exe, sizeof(exe), "%s/%s/%s", strcmp(root, "/") ? root : "", name, EXE_NAME) >=
        (int)sizeof(exe))
        die("path too long");
    char **args = calloc((size_t)argc + 7, sizeof(*args));
    if (!args)
        die("out of memory");
    args[0] = exe;
    args[1] = "-I";   /* no PYTHON* variables (hako._pth cannot stop those) */
    args[2] = "-S";
    args[3] = "-X";   /* UTF-8 mode whatever the locale: JSON, paths and messages in */
    args[4] = "utf8"; /* UTF-8, and only encodings.utf_8 to load at start (layout.py) */
    args[5] = "-c";
    args[6] = "import " ENTRY_MODULE;
    for (int i = 1; i < argc; i++)
        args[i + 6] = argv[i];
    syscall(SYS_execveat, exefd, "", args, environ, AT_EMPTY_PATH);
    die("exec: %s", strerror(errno));
}

int main(int argc, char **argv)
{
    euid = geteuid();
    host_root = euid == 0 && initial_userns();
    verbose = getenv("HAKO_LAUNCHER_DEBUG") && *getenv("HAKO_LAUNCHER_DEBUG");

    /* the build's identity, from the trailer at the end of this file */
    int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    struct stat st;
    uint8_t tr[64];
    if (self < 0 || fstat(self, &st) != 0 || st.st_size < 64 ||
        read_full(self, tr, 64, st.st_size - 64) != 0 || memcmp(tr, TRAILER_MAGIC, 8))
        die("no payload found in /proc/self/exe (is /proc mounted?)");
    close(self);
    /* who we are, for a frozen hako that must name itself (e.g. in a hook's
     * path): the installed file, not the cache (which only the launcher checks) */
    char me[PATH_MAX];
    ssize_t ml = readlink("/proc/self/exe", me, sizeof(me) - 1);
    if (ml > 0 && (me[ml] = '\0', !strstr(me, " (deleted)")))
        setenv("HAKO_LAUNCHER", me, 1);
    else
        unsetenv("HAKO_LAUNCHER");
    /* by hand: 32 snprintf calls were a quarter of the launcher's user time */
    for (int i = 0; i < 32; i++) {
        hexhash[2 * i] = "0123456789abcdef"[tr[32 + i] >> 4];
        hexhash[2 * i + 1] = "0123456789abcdef"[tr[32 + i] & 15];
    }
    hexhash[64] = '\0';
    char name[NAME_HEX + 1];
    memcpy(name, hexhash, NAME_HEX);
    name[NAME_HEX] = '\0';

    const char *cand[4];
    char bufs[4][PATH_MAX];
    int nc = candidates(cand, bufs);
    char why[PATH_MAX + 128], whyall[4 * (PATH_MAX + 160)] = "";
    char canon[PATH_MAX];
    for (int c = 0; c < nc; c++) {
        int rootfd = open_cache_root(cand[c], canon, why, sizeof(why));
        if (rootfd < 0) {
            debug("cache %s unusable: %s", cand[c], why);
            size_t l = strlen(whyall);
            snprintf(whyall + l, sizeof(whyall) - l, "\n  %s", why);
            continue;
        }
        int exefd = -1;
        int r = verify(rootfd, name, &exefd, why, sizeof(why));
        if (r == 0) {
            debug("running %s/%s/%s", cand[c], name, EXE_NAME);
            close(rootfd);
            setenv("HAKO_LAUNCHER_CACHE", cand[c], 1);
            run(exefd, canon, name, argc, argv);
        }
        if (cache_readonly) {
            /* not ours to unpack into or repair */
            size_t l = strlen(whyall);
            snprintf(whyall + l, sizeof(whyall) - l, "\n  %s/%s (uid %u's, used read-only): %s",
                     cand[c], name, (unsigned)cache_owner, why);
            debug("cache %s/%s of uid %u: %s", cand[c], name, (unsigned)cache_owner, why);
            close(rootfd);
            continue;
        }
        if (r == -1)
            msg("cache %s/%s failed verification (%s): unpacking it again", cand[c], name, why);
        else
            debug("cache %s/%s: %s", cand[c], name, why);

        /* slow path: one unpacker at a time per cache root */
        mode_t old_umask = umask(FORBIDDEN_BITS);
        int lock = openat(rootfd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (lock < 0 || flock(lock, LOCK_EX) != 0) {
            snprintf(why, sizeof(why), "%s/.lock: %s", cand[c], strerror(errno));
            umask(old_umask);
            close(rootfd);
            size_t l = strlen(whyall);
            snprintf(whyall + l, sizeof(whyall) - l, "\n  %s", why);
            continue;
        }
        r = verify(rootfd, name, &exefd, why, sizeof(why));   /* someone else may have done it */
        if (r != 0) {
            /* whatever is there is unusable: move it aside (GC removes it when unused) */
            char stale[NAME_HEX + 64];
            snprintf(stale, sizeof(stale), ".stale-%s-%d", name, (int)getpid());
            if (renameat(rootfd, name, rootfd, stale) != 0 && errno != ENOENT)
                remove_tree(rootfd, name);
            collect_garbage(rootfd, name);
            debug("unpacking into %s/%s", cand[c], name);
            unpack(rootfd, name);
            if (verify(rootfd, name, &exefd, why, sizeof(why)) != 0)
                die("%s/%s fails verification right after unpacking (%s): refusing to run it",
                    cand[c], name, why);
        }
        close(lock);
        umask(old_umask);
        close(rootfd);
        setenv("HAKO_LAUNCHER_CACHE", cand[c], 1);
        run(exefd, canon, name, argc, argv);
    }
    die("no usable cache directory (set HAKO_CACHE_DIR to a private directory):%s", whyall);
}
