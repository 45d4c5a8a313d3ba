/*
 * busyroot's payload init: PID 1 of a run whose payload travels over virtio-serial ports.
 *
 * It mounts what a program expects, loads the run's modules (compressed ones through BusyBox's
 * insmod) and mounts its shares (through BusyBox's mount, so that options mean what they mean
 * there), finds the four ports by name, runs the command with its streams on them, reports
 * its status on the port only this process holds, and resets the machine (QEMU runs with
 * -no-reboot: it exits). Interactive boots and checks use /sbin/init instead.
 *
 * Under emulation the first run of any code costs its translation: a shell script starting
 * mount, mkdir and reboot spent 60 ms before the command ran, a C library's start-up alone
 * 15 ms. So this is built static without a C library and does its work in system calls;
 * sys() and _start below are the only lines that know an architecture.
 *
 * What to run comes from PLAN, a list of NUL-terminated strings the host writes for each run:
 * the format version, the disk flag, the directory, then counted groups (modules; shares as
 * tag, directory, type, options; variables as name, value; the command's words).
 *
 * The status port (the host speaks first):
 *   host: "<tag> <0|1>\n"  the stream end tag, and whether stdin carries data
 *   init: "r\n"            the command starts
 *   init: "s <status>\n"   it exited, and the tag went down the stdout and stderr ports
 *   host: "k\n"            both streams arrived (with a disk, which is then made read-only)
 *   init: "d\n"            nothing is left to write back
 *   init: "x <status>\n"   instead of all that, when a set-up step failed
 */
#include <stddef.h>
#include <asm/signal.h>
#include <asm/unistd.h>
#include <linux/errno.h>
#include <linux/fcntl.h>
#include <linux/mman.h>
#include <linux/mount.h>
#include <linux/reboot.h>
#include <linux/time_types.h>

#define PLAN "/busyroot/plan"
#define PLAN_VERSION "1"
#define PORTS_DIR "/sys/class/virtio-ports"
#define DEFAULT_PATH "/sbin:/usr/sbin:/bin:/usr/bin"

/* ---- the system ---------------------------------------------------------------------- */

/* A system call with up to six arguments: its result, or minus the error number. */
static long sys(long n, long a, long b, long c, long d, long e, long f)
{
#if defined(__x86_64__)
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
#elif defined(__aarch64__)
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc 0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
#elif defined(__riscv) && __riscv_xlen == 64
	register long a7 __asm__("a7") = n;
	register long a0 __asm__("a0") = a;
	register long a1 __asm__("a1") = b;
	register long a2 __asm__("a2") = c;
	register long a3 __asm__("a3") = d;
	register long a4 __asm__("a4") = e;
	register long a5 __asm__("a5") = f;
	__asm__ volatile("ecall"
			 : "+r"(a0)
			 : "r"(a7), "r"(a1), "r"(a2), "r"(a3), "r"(a4), "r"(a5)
			 : "memory");
	return a0;
#else
#error "busyroot's payload init has no system calls for this architecture"
#endif
}

/* The entry point: the kernel's stack (argument count, arguments, environment) to init(). */
#if defined(__x86_64__)
__asm__(".text\n.global _start\n_start:\n"
	"\txor %ebp, %ebp\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall init\n\thlt\n");
#elif defined(__aarch64__)
__asm__(".text\n.global _start\n_start:\n\tmov x0, sp\n\tbl init\n");
#elif defined(__riscv)
__asm__(".text\n.global _start\n_start:\n"
	".option push\n.option norelax\n\tla gp, __global_pointer$\n.option pop\n"
	"\tmv a0, sp\n\tcall init\n");
#endif

#define SYS(n, ...) sys_args(n, __VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define sys_args(n, a, b, c, d, e, f, ...) \
	sys(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

static long open_file(const char *path, int flags)
{
	return SYS(__NR_openat, AT_FDCWD, path, flags | O_CLOEXEC | O_NOCTTY, 0);
}

static long make_dir(const char *path)
{
	long r = SYS(__NR_mkdirat, AT_FDCWD, path, 0755);
	return r == -EEXIST ? 0 : r;
}

static long read_some(int fd, void *buf, size_t n)
{
	return SYS(__NR_read, fd, buf, n);
}

static void close_file(int fd)
{
	SYS(__NR_close, fd);
}

static void write_all(int fd, const char *data, size_t n)
{
	while (n > 0) {
		long done = SYS(__NR_write, fd, data, n);
		if (done == -EINTR)
			continue;
		if (done <= 0)
			return;
		data += done;
		n -= (size_t)done;
	}
}

static __attribute__((noreturn)) void power_off(void)
{
	SYS(__NR_sync, 0);
	SYS(__NR_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART, 0);
	for (;;)
		SYS(__NR_exit_group, 1);
}

/* Fresh zeroed memory, never given back (this process is short-lived); NULL if none. */
static void *allocate(size_t n)
{
	long p = SYS(__NR_mmap, 0, n ? n : 1, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p < 0 && p > -4096 ? NULL : (void *)p;
}

/* The compiler may call these for copies and zeroing of its own. */
void *memcpy(void *to, const void *from, size_t n)
{
	volatile char *d = to;
	const char *s = from;
	while (n--)
		*d++ = *s++;
	return to;
}

void *memset(void *to, int c, size_t n)
{
	volatile char *d = to;
	while (n--)
		*d++ = (char)c;
	return to;
}

/* ---- text ------------------------------------------------------------------------------ */

static size_t length(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* A line being put together, cut short rather than overrun. */
struct text {
	char buf[1024];
	size_t len;
};

static void add(struct text *t, const char *s)
{
	while (*s && t->len < sizeof t->buf - 1)
		t->buf[t->len++] = *s++;
	t->buf[t->len] = '\0';
}

static void add_number(struct text *t, long n)
{
	char digits[24];
	int i = sizeof digits - 1;
	unsigned long u = n < 0 ? 0UL - (unsigned long)n : (unsigned long)n;
	digits[i] = '\0';
	do
		digits[--i] = (char)('0' + u % 10);
	while ((u /= 10) && i > 1);
	if (n < 0)
		digits[--i] = '-';
	add(t, digits + i);
}

/* What an error number means, for the errors this file can meet. */
static void add_error(struct text *t, long err)
{
	static const struct {
		int number;
		const char *text;
	} known[] = {
		{ EPERM, "Operation not permitted" },	{ ENOENT, "No such file or directory" },
		{ EIO, "I/O error" },			{ ENOEXEC, "Exec format error" },
		{ ENOMEM, "Out of memory" },		{ EACCES, "Permission denied" },
		{ EBUSY, "Device or resource busy" },	{ ENOTDIR, "Not a directory" },
		{ EISDIR, "Is a directory" },		{ EINVAL, "Invalid argument" },
		{ ENAMETOOLONG, "File name too long" },	{ E2BIG, "Argument list too long" },
		{ EEXIST, "File exists" },		{ ENODEV, "No such device" },
		{ EKEYREJECTED, "Key was rejected by service" },
	};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
		if (known[i].number == err) {
			add(t, known[i].text);
			return;
		}
	}
	add(t, "error ");
	add_number(t, err);
}

/* ---- failing ----------------------------------------------------------------------------- */

/* The status port once it is open: a failure is then reported there as well. */
static int status_port = -1;

/* Says on the console what failed and why, tells the host when it can, and resets. */
static __attribute__((noreturn)) void fail(long status, const char *what, const char *detail,
					   long err)
{
	struct text line = { .len = 0 };
	add(&line, "busyroot init: ");
	add(&line, what);
	add(&line, " failed (");
	if (detail)
		add(&line, detail);
	else
		add_error(&line, err);
	add(&line, ")\n");
	long console = open_file("/dev/console", O_WRONLY);
	if (console >= 0)
		write_all((int)console, line.buf, line.len);
	if (status_port >= 0) {
		struct text report = { .len = 0 };
		add(&report, "x ");
		add_number(&report, status);
		add(&report, "\n");
		write_all(status_port, report.buf, report.len);
	}
	power_off();
}

/* ---- the plan ---------------------------------------------------------------------------- */

static char *plan, *plan_end;

static void read_plan(void)
{
	long fd = open_file(PLAN, O_RDONLY);
	if (fd < 0)
		fail(1, "reading " PLAN, NULL, -fd);
	long size = SYS(__NR_lseek, fd, 0, 2 /* SEEK_END */);
	if (size < 0 || SYS(__NR_lseek, fd, 0, 0 /* SEEK_SET */) < 0)
		fail(1, "reading " PLAN, NULL, size < 0 ? -size : EIO);
	plan = allocate((size_t)size + 1);
	if (!plan)
		fail(1, "reading " PLAN, NULL, ENOMEM);
	long got = 0;
	while (got < size) {
		long n = read_some((int)fd, plan + got, (size_t)(size - got));
		if (n == -EINTR)
			continue;
		if (n <= 0)
			fail(1, "reading " PLAN, n < 0 ? NULL : "it ends early", -n);
		got += n;
	}
	close_file((int)fd);
	plan_end = plan + got;
}

static char *next_string(void)
{
	if (plan >= plan_end || plan_end[-1] != '\0')
		fail(1, "reading " PLAN, "it ends early", 0);
	char *s = plan;
	plan += length(s) + 1;
	return s;
}

static size_t next_count(void)
{
	const char *s = next_string();
	size_t n = 0;
	if (!*s)
		fail(1, "reading " PLAN, "a count is not a number", 0);
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || n > 1000000)
			fail(1, "reading " PLAN, "a count is not a number", 0);
		n = n * 10 + (size_t)(*s - '0');
	}
	return n;
}

/* ---- the environment and programs -------------------------------------------------------- */

/* The environment programs get: the kernel's, with busyroot's and the run's variables. */
static char **env;
static size_t env_len;

/* Where the variable `name` is in the environment, or env_len when it is not there. */
static size_t env_index(const char *name)
{
	size_t n = length(name), i = 0;
	for (; i < env_len; i++) {
		size_t k = 0;
		while (k < n && env[i][k] == name[k])
			k++;
		if (k == n && env[i][k] == '=')
			break;
	}
	return i;
}

static void set_env(const char *name, const char *value)
{
	size_t n = length(name), v = length(value);
	char *entry = allocate(n + v + 2);
	if (!entry)
		fail(1, "setting the environment", NULL, ENOMEM);
	memcpy(entry, name, n);
	entry[n] = '=';
	memcpy(entry + n + 1, value, v + 1);
	size_t i = env_index(name);
	env[i] = entry;
	if (i == env_len)
		env_len++;
}

static const char *get_env(const char *name)
{
	size_t i = env_index(name);
	return i < env_len ? env[i] + length(name) + 1 : NULL;
}

/* Runs argv[0] as a shell would: a name without a slash is looked for along PATH, and a file
 * the kernel cannot run is given to /bin/sh. Returns only on failure, with the error. */
static long exec_program(char **argv)
{
	const char *name = argv[0];
	int slash = 0;
	for (const char *c = name; *c; c++)
		slash |= *c == '/';
	const char *path = get_env("PATH");
	if (slash || !path)
		path = "";
	long err = -ENOENT;
	int denied = 0;
	for (const char *dir = path;;) {
		const char *end = dir;
		while (*end && *end != ':')
			end++;
		char full[4096];
		size_t d = (size_t)(end - dir), n = length(name);
		const char *file = name;
		if (!slash && d > 0) {
			if (d + n + 2 > sizeof full)
				return -ENAMETOOLONG;
			memcpy(full, dir, d);
			full[d] = '/';
			memcpy(full + d + 1, name, n + 1);
			file = full;
		}
		long r = SYS(__NR_execve, file, argv, env);
		if (r == -ENOEXEC) {
			size_t words = 0;
			while (argv[words])
				words++;
			char **script = allocate((words + 2) * sizeof *script);
			if (!script)
				return -ENOMEM;
			script[0] = "sh";
			script[1] = (char *)file;
			for (size_t i = 1; i <= words; i++)
				script[i + 1] = argv[i];
			return SYS(__NR_execve, "/bin/sh", script, env);
		}
		if (r == -EACCES)
			denied = 1;
		else if (r != -ENOENT && r != -ENOTDIR)
			err = r;
		if (slash || !*end)
			return denied ? -EACCES : err;
		dir = end + 1;
	}
}

/* A child's exit status as a shell gives it: its code, or 128 + the signal that ended it. */
static long wait_for(long child)
{
	int raw = 0;
	long r;
	do
		r = SYS(__NR_wait4, child, &raw, 0, 0);
	while (r == -EINTR);
	if (r < 0)
		return 1;
	return (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f);
}

static long start_child(void)
{
	return SYS(__NR_clone, SIGCHLD, 0, 0, 0, 0);
}

/* Runs a program (BusyBox's, found on PATH) on the console to its end: its status. */
static long run(char **argv)
{
	long child = start_child();
	if (child == 0)
		SYS(__NR_exit_group, exec_program(argv) == -ENOENT ? 127 : 126);
	return child < 0 ? 1 : wait_for(child);
}

/* ---- set-up ------------------------------------------------------------------------------ */

static void mount_basics(void)
{
	SYS(__NR_mount, "proc", "/proc", "proc", 0, 0);
	long dev = SYS(__NR_mount, "dev", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	SYS(__NR_mount, "sysfs", "/sys", "sysfs", 0, 0);
	SYS(__NR_mount, "tmpfs", "/tmp", "tmpfs", MS_NOSUID, "mode=1777");
	make_dir("/dev/pts");
	SYS(__NR_mount, "devpts", "/dev/pts", "devpts", 0, "gid=5,mode=620");
	long null = open_file("/dev/null", O_RDWR);
	if (dev < 0 && null < 0) {
		/* No devtmpfs: BusyBox's mdev fills /dev from sysfs. */
		char *mdev[] = { "mdev", "-s", NULL };
		run(mdev);
	}
	if (null >= 0)
		close_file((int)null);
	/* Standard streams the kernel could not open (no /dev/console) are /dev/null, so that
	 * what is opened later never lands on 0, 1 or 2. */
	while ((null = SYS(__NR_openat, AT_FDCWD, "/dev/null", O_RDWR, 0)) >= 0 && null <= 2)
		;
	if (null > 2)
		close_file((int)null);
}

static __attribute__((noreturn)) void failed_program(long status, const char *program,
						     const char *arg)
{
	struct text what = { .len = 0 };
	add(&what, program);
	add(&what, " ");
	add(&what, arg);
	struct text detail = { .len = 0 };
	add(&detail, "exit status ");
	add_number(&detail, status);
	fail(status, what.buf, detail.buf, 0);
}

/* Loads each module of the plan: a plain .ko with one system call, a compressed one through
 * BusyBox's insmod, which inflates it. */
static void load_modules(void)
{
	for (size_t n = next_count(); n > 0; n--) {
		char *module = next_string();
		size_t len = length(module);
		if (len > 3 && same(module + len - 3, ".ko")) {
			long fd = open_file(module, O_RDONLY);
			long r = fd < 0 ? fd : SYS(__NR_finit_module, fd, "", 0);
			if (fd >= 0)
				close_file((int)fd);
			if (r < 0) {
				struct text what = { .len = 0 };
				add(&what, "insmod ");
				add(&what, module);
				fail(1, what.buf, NULL, -r);
			}
			continue;
		}
		char *argv[] = { "insmod", module, NULL };
		long status = run(argv);
		if (status != 0)
			failed_program(status, "insmod", module);
	}
}

static void mount_shares(void)
{
	for (size_t n = next_count(); n > 0; n--) {
		char *tag = next_string(), *dir = next_string();
		char *type = next_string(), *options = next_string();
		char parent[4096];
		size_t len = length(dir);
		if (len >= sizeof parent)
			fail(1, "mount", "the directory's name is too long", 0);
		/* mkdir -p */
		memcpy(parent, dir, len + 1);
		for (char *c = parent + 1; *c; c++) {
			if (*c != '/')
				continue;
			*c = '\0';
			make_dir(parent);
			*c = '/';
		}
		make_dir(parent);
		char *argv[] = { "mount", "-t", type, "-o", options, tag, dir, NULL };
		long status = run(argv);
		if (status != 0)
			failed_program(status, "mount", dir);
	}
}

/* ---- the ports --------------------------------------------------------------------------- */

enum { STDIN_PORT, STDOUT_PORT, STDERR_PORT, STATUS_PORT, PORT_COUNT };
static const char *const port_names[PORT_COUNT] = {
	"busyroot.stdin", "busyroot.stdout", "busyroot.stderr", "busyroot.status",
};

/* A directory entry as getdents64 returns it. */
struct entry {
	unsigned long long ino;
	long long off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

/* Looks through sysfs once for ports not yet found; returns how many are found. */
static int find_ports(char found[PORT_COUNT][300])
{
	long dir = open_file(PORTS_DIR, O_RDONLY | O_DIRECTORY);
	if (dir < 0)
		return 0;
	char buf[2048];
	long n;
	while ((n = SYS(__NR_getdents64, dir, buf, sizeof buf)) > 0) {
		for (long at = 0; at < n; at += ((struct entry *)(buf + at))->reclen) {
			const char *name = ((struct entry *)(buf + at))->name;
			if (name[0] == '.' || length(name) > 255)
				continue;
			struct text path = { .len = 0 };
			add(&path, PORTS_DIR "/");
			add(&path, name);
			add(&path, "/name");
			long fd = open_file(path.buf, O_RDONLY);
			if (fd < 0)
				continue;
			char port[64];
			long len = read_some((int)fd, port, sizeof port - 1);
			close_file((int)fd);
			if (len <= 0)
				continue;
			port[len] = '\0';
			if (port[len - 1] == '\n')
				port[len - 1] = '\0';
			for (int p = 0; p < PORT_COUNT; p++) {
				if (found[p][0] || !same(port, port_names[p]))
					continue;
				struct text dev = { .len = 0 };
				add(&dev, "/dev/");
				add(&dev, name);
				memcpy(found[p], dev.buf, dev.len + 1);
			}
		}
	}
	close_file((int)dir);
	int count = 0;
	for (int p = 0; p < PORT_COUNT; p++)
		count += found[p][0] != '\0';
	return count;
}

/* Ports come moments after their driver loads: look again at once a few dozen times, then
 * every 5 ms, for 10 s. */
static void wait_for_ports(char found[PORT_COUNT][300])
{
	for (int tries = 0; find_ports(found) < PORT_COUNT; tries++) {
		if (tries > 2050)
			fail(1, "finding the busyroot.* virtio-serial ports", "not all four after 10 s", 0);
		if (tries >= 50) {
			struct __kernel_timespec pause = { 0, 5 * 1000 * 1000 };
			SYS(__NR_nanosleep, &pause, 0);
		}
	}
}

static int open_port(const char *path, int flags)
{
	long fd = open_file(path, flags);
	if (fd < 0) {
		struct text what = { .len = 0 };
		add(&what, "opening ");
		add(&what, path);
		fail(-fd, what.buf, NULL, -fd);
	}
	return (int)fd;
}

/* A line from the host, without its newline. */
static void read_line(int fd, char *buf, size_t size)
{
	size_t len = 0;
	for (;;) {
		char c;
		long n = read_some(fd, &c, 1);
		if (n == -EINTR)
			continue;
		if (n <= 0 || c == '\n')
			break;
		if (len + 1 < size)
			buf[len++] = c;
	}
	buf[len] = '\0';
}

/* ---- the run ----------------------------------------------------------------------------- */

/* The command, in the child: its streams, its directory, its program. The statuses are a
 * shell's: 2 when the directory is not there, 127 when the program is not, 126 when it
 * cannot run. */
static __attribute__((noreturn)) void start_command(int in, int out, int err, const char *dir,
						    char **argv)
{
	if (SYS(__NR_dup3, in, 0, 0) < 0 || SYS(__NR_dup3, out, 1, 0) < 0 ||
	    SYS(__NR_dup3, err, 2, 0) < 0)
		SYS(__NR_exit_group, 1);
	long r = SYS(__NR_chdir, dir);
	struct text line = { .len = 0 };
	add(&line, "busyroot init: ");
	if (r < 0) {
		add(&line, "can't cd to ");
		add(&line, dir);
		add(&line, ": ");
		add_error(&line, -r);
		add(&line, "\n");
		write_all(2, line.buf, line.len);
		SYS(__NR_exit_group, 2);
	}
	set_env("PWD", dir);
	r = exec_program(argv);
	add(&line, argv[0]);
	add(&line, ": ");
	if (r == -ENOENT)
		add(&line, "not found");
	else
		add_error(&line, -r);
	add(&line, "\n");
	write_all(2, line.buf, line.len);
	for (;;)
		SYS(__NR_exit_group, r == -ENOENT ? 127 : 126);
}

__attribute__((noreturn, used)) void init(long *stack)
{
	long argc = stack[0];
	char **kernel_env = (char **)(stack + 1 + argc + 1);
	mount_basics();
	read_plan();
	if (!same(next_string(), PLAN_VERSION))
		fail(1, "reading " PLAN, "it was written for another busyroot", 0);
	int disk = same(next_string(), "1");
	const char *dir = next_string();
	/* Room for the kernel's variables, PATH, HOME and PWD, and the run's, of which there
	 * are fewer than half the plan's bytes. */
	size_t kernel_vars = 0;
	while (kernel_env[kernel_vars])
		kernel_vars++;
	size_t room = kernel_vars + 4 + (size_t)(plan_end - plan) / 2;
	env = allocate(room * sizeof *env);
	if (!env)
		fail(1, "setting the environment", NULL, ENOMEM);
	for (; env_len < kernel_vars; env_len++)
		env[env_len] = kernel_env[env_len];
	set_env("PATH", DEFAULT_PATH);
	set_env("HOME", "/root");
	load_modules();
	mount_shares();
	for (size_t n = next_count(); n > 0; n--) {
		const char *name = next_string();
		set_env(name, next_string());
	}
	size_t words = next_count();
	if (words == 0)
		fail(1, "reading " PLAN, "it names no command", 0);
	char **argv = allocate((words + 1) * sizeof *argv);
	if (!argv)
		fail(1, "reading " PLAN, NULL, ENOMEM);
	for (size_t n = 0; n < words; n++)
		argv[n] = next_string();

	static char ports[PORT_COUNT][300];
	wait_for_ports(ports);
	status_port = open_port(ports[STATUS_PORT], O_RDWR);
	char hello[128];
	read_line(status_port, hello, sizeof hello);
	char *flag = hello;
	while (*flag && *flag != ' ')
		flag++;
	if (!*flag)
		fail(1, "reading the host's first line", "it has no stdin flag", 0);
	*flag++ = '\0';
	const char *tag = hello;
	/* Every port stays open here, so the command can open none of them: not the status
	 * port, and not the stdin port either, which the host may have ended (a write there
	 * would block). The command gets its streams as copies. */
	int out = open_port(ports[STDOUT_PORT], O_WRONLY);
	int err = open_port(ports[STDERR_PORT], O_WRONLY);
	int in = open_port(ports[STDIN_PORT], O_RDONLY);
	int command_in = same(flag, "1") ? in : open_port("/dev/null", O_RDONLY);

	write_all(status_port, "r\n", 2);
	long child = start_child();
	if (child < 0)
		fail(1, "starting the command", NULL, -child);
	if (child == 0)
		start_command(command_in, out, err, dir, argv);
	long status = wait_for(child);

	write_all(out, tag, length(tag));
	write_all(err, tag, length(tag));
	struct text report = { .len = 0 };
	add(&report, "s ");
	add_number(&report, status);
	add(&report, "\n");
	write_all(status_port, report.buf, report.len);
	/* The host says when both streams reached their tag: data still queued in the VMM would
	 * be lost if the power went off first. */
	char ack[16];
	read_line(status_port, ack, sizeof ack);
	if (disk) {
		SYS(__NR_sync, 0);
		SYS(__NR_mount, 0, "/", 0, MS_REMOUNT | MS_RDONLY, 0);
	}
	write_all(status_port, "d\n", 2);
	power_off();
}
