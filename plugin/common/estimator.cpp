#include "estimator.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "prediction.hpp"

namespace ttpred::slurm {

SpankArgs parse_spank_args(int argc, const char* const* argv) {
  SpankArgs a;
  for (int i = 0; i < argc; ++i) {
    if (!argv || !argv[i]) continue;
    std::string arg(argv[i]);
    auto eq = arg.find('=');
    std::string key = arg.substr(0, eq);
    std::string val = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (key == "estimator") {
      if (val.empty() || val[0] != '/')
        a.problems.push_back("estimator='" + val + "' is not an absolute path: using " + a.estimator);
      else
        a.estimator = val;
    } else if (key == "timeout") {
      auto v = parse_number(val);
      if (!v || *v <= 0 || *v > 3600)
        a.problems.push_back("timeout='" + val + "' is not a number of seconds in (0, 3600]: using " +
                             std::to_string(static_cast<int>(a.timeout_seconds)));
      else
        a.timeout_seconds = *v;
    } else if (key == "max_seconds") {
      auto v = parse_number(val);
      if (!v || *v <= 0 || *v > 86400)
        a.problems.push_back("max_seconds='" + val + "' is not a number of seconds in (0, 86400]: ignored");
      else
        a.max_seconds = *v;
    } else if (key == "device") {
      if (val != "auto" && val != "cpu" && val != "cuda")
        a.problems.push_back("device='" + val + "' is not auto, cpu or cuda: using " + a.device);
      else
        a.device = val;
    } else if (key == "slurm_budget") {
      if (val == "yes" || val == "1" || val == "true") a.slurm_budget = true;
      else if (val == "no" || val == "0" || val == "false") a.slurm_budget = false;
      else a.problems.push_back("slurm_budget='" + val + "' is not yes or no: using yes");
    } else if (key == "follow_job") {
      if (val == "yes" || val == "1" || val == "true") a.follow_job = true;
      else if (val == "no" || val == "0" || val == "false") a.follow_job = false;
      else a.problems.push_back("follow_job='" + val + "' is not yes or no: using no");
    } else if (key == "mode") {
      if (val == "job") a.job_mode = true;
      else if (val == "sync") a.job_mode = false;
      else a.problems.push_back("mode='" + val + "' is not sync or job: using sync");
    } else if (key == "partition" || key == "account" || key == "qos" || key == "gres") {
      // Slurm names: no spaces, quotes or control characters (they go into a job request).
      bool ok = val.size() <= 128;
      for (unsigned char c : val) ok = ok && c > 32 && c < 127 && c != '\'' && c != '"';
      if (!ok) a.problems.push_back(key + "='" + val + "' is not a plain Slurm name: ignored");
      else (key == "partition" ? a.partition : key == "account" ? a.account : key == "qos" ? a.qos : a.gres) = val;
    } else if (key == "predictor" || key == "output" || key == "cache_dir") {
      if (val.empty() || val[0] != '/' || val.find('\n') != std::string::npos)
        a.problems.push_back(key + "='" + val + "' is not an absolute path: ignored");
      else (key == "predictor" ? a.predictor : key == "output" ? a.output : a.cache_dir) = val;
    } else {
      a.problems.push_back("unknown argument '" + arg +
                           "' ignored (expected estimator=, timeout=, device=, slurm_budget=, mode=, "
                           "partition=, account=, qos=, gres=, follow_job=, predictor=, output=, cache_dir=, max_seconds=)");
    }
  }
  return a;
}

namespace {

double now_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

std::string last_line(const std::string& s, std::size_t max) {
  std::size_t end = s.size();
  while (end > 0 && (s[end - 1] == '\n' || s[end - 1] == '\r' || s[end - 1] == ' ')) --end;
  std::size_t start = s.rfind('\n', end == 0 ? 0 : end - 1);
  start = (start == std::string::npos) ? 0 : start + 1;
  std::string line = s.substr(start, end - start);
  if (line.size() > max) line = line.substr(0, max) + "...";
  return line;
}

RunResult run_with_timeout(const std::vector<std::string>& argv, double timeout_seconds,
                           std::size_t max_output) {
  RunResult r;
  if (argv.empty()) {
    r.error = "no command";
    return r;
  }
  if (::access(argv[0].c_str(), X_OK) != 0) {
    r.error = argv[0] + ": " + std::strerror(errno);
    return r;
  }
  int out_pipe[2], err_pipe[2], exec_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    r.error = std::string("pipe: ") + std::strerror(errno);
    return r;
  }
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]); ::close(out_pipe[1]);
    r.error = std::string("pipe: ") + std::strerror(errno);
    return r;
  }
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]); ::close(out_pipe[1]); ::close(err_pipe[0]); ::close(err_pipe[1]);
    r.error = std::string("pipe: ") + std::strerror(errno);
    return r;
  }
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) {
    r.error = std::string("fork: ") + std::strerror(errno);
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1], exec_pipe[0], exec_pipe[1]}) ::close(fd);
    return r;
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::setpgid(0, 0);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGALRM, SIGQUIT})
      ::signal(s, SIG_DFL);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::execv(cargv[0], cargv.data());
    int e = errno;
    ssize_t ignored = ::write(exec_pipe[1], &e, sizeof e);
    (void)ignored;
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from the parent, to avoid the race
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::close(exec_pipe[1]);
  int fds[3] = {out_pipe[0], err_pipe[0], exec_pipe[0]};
  int exec_errno = 0;
  bool killed = false, child_done = false;
  int wstatus = 0;
  const double deadline = now_seconds() + timeout_seconds;
  double kill_deadline = 0;

  // When the direct child has exited, its exit status and output count: a
  // grandchild that keeps the pipes open gets kGrace to let the last bytes
  // through, then the runner stops waiting (and SIGTERMs the process group).
  constexpr double kGrace = 0.2;
  double child_exit_time = 0;
  while (true) {
    if (!child_done) {
      pid_t w = ::waitpid(pid, &wstatus, WNOHANG);
      if (w == pid) {
        child_done = true;
        child_exit_time = now_seconds();
      }
    }
    bool open_fds = fds[0] >= 0 || fds[1] >= 0 || fds[2] >= 0;
    if (child_done && !open_fds) break;
    double now = now_seconds();
    if (child_done && !killed && now >= child_exit_time + kGrace) {
      ::kill(-pid, SIGTERM);  // stray grandchildren of the estimator
      break;
    }
    if (!killed && now >= deadline) {
      ::kill(-pid, SIGTERM);
      killed = true;
      kill_deadline = now + 1.0;
    } else if (killed && kill_deadline > 0 && now >= kill_deadline) {
      ::kill(-pid, SIGKILL);
      kill_deadline = 0;
    }
    if (killed && child_done && kill_deadline == 0) break;  // stray grandchildren keep pipes open
    pollfd pfd[3];
    int n = 0;
    for (int fd : fds)
      if (fd >= 0) pfd[n++] = pollfd{fd, POLLIN, 0};
    // Wake up at least every 20 ms to reap the child and check the deadlines.
    int rc = ::poll(pfd, static_cast<nfds_t>(n), 20);
    if (n == 0) {
      if (rc < 0 && errno != EINTR) break;
      continue;
    }
    if (rc < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      ssize_t got = ::read(pfd[i].fd, buf, sizeof buf);
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      int* slot = pfd[i].fd == fds[0] ? &fds[0] : pfd[i].fd == fds[1] ? &fds[1] : &fds[2];
      if (got <= 0) {
        close_fd(*slot);
        continue;
      }
      if (slot == &fds[0]) {
        if (r.out.size() < max_output) r.out.append(buf, static_cast<std::size_t>(got));
      } else if (slot == &fds[1]) {
        r.err.append(buf, static_cast<std::size_t>(got));
        if (r.err.size() > 8192) r.err.erase(0, r.err.size() - 4096);
      } else if (got >= static_cast<ssize_t>(sizeof exec_errno)) {
        std::memcpy(&exec_errno, buf, sizeof exec_errno);
      }
    }
  }
  for (int& fd : fds) close_fd(fd);
  if (!child_done) {
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
  }
  if (exec_errno != 0) {
    r.status = RunResult::Status::exec_error;
    r.error = argv[0] + ": " + std::strerror(exec_errno);
    return r;
  }
  if (WIFEXITED(wstatus)) r.exit_code = WEXITSTATUS(wstatus);
  else if (WIFSIGNALED(wstatus)) r.exit_code = 128 + WTERMSIG(wstatus);
  if (killed) {
    r.status = RunResult::Status::timeout;
    r.error = "timed out after " + std::to_string(static_cast<long>(timeout_seconds)) + " s";
  } else if (r.exit_code == 0) {
    r.status = RunResult::Status::ok;
  } else {
    r.status = RunResult::Status::failed;
    r.error = WIFSIGNALED(wstatus) ? "killed by signal " + std::to_string(WTERMSIG(wstatus))
                                   : "exit code " + std::to_string(r.exit_code);
  }
  return r;
}

}  // namespace ttpred::slurm
