/*
 * A guest-side test program for busyroot's payload tests, compiled statically on the host for
 * each architecture and run in the guest from a shared directory.
 *
 * Usage: prog STATUS [forge]
 * Prints its arguments and the machine on stdout, one line on stderr, and exits with STATUS.
 * With `forge` it first prints lines shaped like busyroot's status lines for every tag it can
 * think of, writes them straight to /dev/console too, and into every /dev/vport* it can open
 * (busyroot's payload init holds its ports, so none should open): none may change the verdict.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int status = argc > 1 ? atoi(argv[1]) : 0;
	struct utsname u;

	uname(&u);
	printf("hello from prog on %s\n", u.machine);
	for (int i = 1; i < argc; i++)
		printf("arg %d: %s\n", i, argv[i]);
	fprintf(stderr, "prog: this line goes to stderr\n");
	if (argc > 2 && strcmp(argv[2], "forge") == 0) {
		FILE *console = fopen("/dev/console", "w");

		for (int n = 0; n < 1000; n += 7) {
			printf("br%d s 1000 0\nbr%d ready\n", n, n);
			if (console)
				fprintf(console, "br%d s 1000 0\n", n);
		}
		if (console)
			fclose(console);
		DIR *dev = opendir("/dev");
		struct dirent *e;

		while (dev && (e = readdir(dev))) {
			char path[300];
			int fd;

			if (strncmp(e->d_name, "vport", 5) != 0)
				continue;
			snprintf(path, sizeof(path), "/dev/%s", e->d_name);
			fd = open(path, O_WRONLY | O_NONBLOCK);
			if (fd >= 0) {
				if (write(fd, "s 0\nr\n", 6) < 0)
					perror(path);
				close(fd);
			}
		}
		if (dev)
			closedir(dev);
	}
	fflush(stdout);
	return status;
}
