// Edge Impulse's AT server: a line discipline and a dispatcher over a table of commands.
//
// The server knows nothing about any one command (shared/STYLE.md). It echoes what it
// receives, runs a line on CR and prints the prompt, exactly as shared/PROTOCOL.md says.
// Plain C++14, no Arduino or TFLM headers, no heap.

#ifndef TINYML_AT_SERVER_H_
#define TINYML_AT_SERVER_H_

#include <stddef.h>

#include "device_io.h"

namespace tinyml {

constexpr const char* kAtCommandSetVersion = "1.8.0";
// A line longer than this is discarded whole: its excess is neither stored nor echoed, and
// the CR that ends it prints kAtLineTooLong and a prompt instead of running it. Work per
// byte is constant, whatever the line's length (issue 13: a 1 MB line, garbage bytes).
constexpr size_t kAtMaxLineLength = 256;
constexpr const char* kAtLineTooLong = "ERR: line too long (more than 256 characters), discarded\n";
constexpr int kAtMaxArgs = 16;            // AT+X=a,b,...: arguments past this are dropped

// One entry of the command table: AT+<name> (run), AT+<name>? (read) and
// AT+<name>=<write_args> (write). A missing form is a null handler. A handler returns
// true when the prompt should follow its output (false: TIMEOUT, too few arguments).
struct AtCommand {
  const char* name;
  const char* help;
  bool (*run)(DeviceIo& io);
  bool (*read)(DeviceIo& io);
  bool (*write)(DeviceIo& io, char** argv, int argc);
  const char* write_args;
};

class AtServer {
 public:
  // AT+HELP is built in and listed first; `commands` must outlive the server.
  AtServer(DeviceIo& io, const AtCommand* commands, size_t count);

  // Handles every byte waiting on the link (a command may read more bytes itself).
  void poll();
  // Handles one received byte: echo, backspace, CR runs the line, LF is ignored.
  void handle(int byte);
  void print_prompt();
  void print_help();

 private:
  // Runs the line; true when the prompt should follow.
  bool execute();
  const AtCommand* find(const char* name) const;
  void redraw();

  DeviceIo& io_;
  const AtCommand* commands_;
  size_t count_;
  char line_[kAtMaxLineLength + 1];
  size_t length_;
  bool overflow_;  // the line went past kAtMaxLineLength: discard it at CR
  char work_[kAtMaxLineLength + 1];  // the line cut into name and arguments
};

}  // namespace tinyml

#endif  // TINYML_AT_SERVER_H_
