#include "at_server.h"

#include <string.h>

namespace tinyml {

namespace {

constexpr const char* kPrompt = "> ";
constexpr const char* kHelpHelp = "Lists all commands";

bool same_name(const char* a, const char* b) {
  for (;; a++, b++) {
    char x = (*a >= 'a' && *a <= 'z') ? static_cast<char>(*a - 'a' + 'A') : *a;
    char y = (*b >= 'a' && *b <= 'z') ? static_cast<char>(*b - 'a' + 'A') : *b;
    if (x != y) return false;
    if (x == '\0') return true;
  }
}

}  // namespace

AtServer::AtServer(DeviceIo& io, const AtCommand* commands, size_t count)
    : io_(io), commands_(commands), count_(count), length_(0), overflow_(false) {
  line_[0] = '\0';
  work_[0] = '\0';
}

void AtServer::poll() {
  int byte;
  while ((byte = io_.read()) >= 0) handle(byte);
}

void AtServer::print_prompt() { io_.print(kPrompt); }

void AtServer::redraw() {
  // "\r\x1b[K> <line so far>\x1b[<column>G": the column is 1-based, after the prompt.
  io_.print("\r\x1b[K");
  io_.print(kPrompt);
  io_.write(line_, length_);
  io_.printf("\x1b[%uG", static_cast<unsigned>(length_ + strlen(kPrompt) + 1));
}

void AtServer::handle(int byte) {
  if (byte == '\r') {
    io_.print("\r\n");
    bool prompt = true;
    if (overflow_) {
      io_.print(kAtLineTooLong);
    } else {
      prompt = execute();
    }
    length_ = 0;
    overflow_ = false;
    line_[0] = '\0';
    if (prompt) print_prompt();
  } else if (byte == 0x08 || byte == 0x7f) {
    // Edge Impulse's server redraws only when there was a character to remove.
    if (length_ > 0 && !overflow_) {
      line_[--length_] = '\0';
      redraw();
    }
  } else if (byte >= 0x20 && byte <= 0x7e) {
    if (length_ < kAtMaxLineLength) {
      line_[length_++] = static_cast<char>(byte);
      line_[length_] = '\0';
      char c = static_cast<char>(byte);
      io_.write(&c, 1);
    } else {
      overflow_ = true;
    }
  }
  // LF is ignored (some ports turn LF into CR, so hosts send CR alone); so is every other
  // control byte, escape sequences included.
}

const AtCommand* AtServer::find(const char* name) const {
  for (size_t i = 0; i < count_; i++) {
    if (same_name(commands_[i].name, name)) return &commands_[i];
  }
  return nullptr;
}

void AtServer::print_help() {
  io_.printf("AT Server\nCommand set version: %s\n", kAtCommandSetVersion);
  io_.print("Arguments in square brackets are optional, eg.:\nAT+CMD=arg1,[arg2]\n\n");
  io_.printf("AT+HELP\n\t%s\n\n", kHelpHelp);
  for (size_t i = 0; i < count_; i++) {
    const AtCommand& c = commands_[i];
    if (c.run) io_.printf("AT+%s\n", c.name);
    if (c.read) io_.printf("AT+%s?\n", c.name);
    if (c.write) io_.printf("AT+%s=%s\n", c.name, c.write_args ? c.write_args : "");
    io_.printf("\t%s\n\n", c.help);
  }
}

bool AtServer::execute() {
  if (strncmp(line_, "AT+", 3) != 0) {
    io_.print("Not a valid AT command (");
    io_.write(line_, length_);
    io_.print(")\n");
    return true;
  }
  memcpy(work_, line_, length_ + 1);
  char* name = work_ + 3;
  size_t name_length = strlen(name);
  enum { kRun, kRead, kWrite } form = kRun;
  char* argv[kAtMaxArgs];
  int argc = 0;
  char* equals = strchr(name, '=');
  if (name_length > 0 && name[name_length - 1] == '?') {
    name[name_length - 1] = '\0';
    form = kRead;
  } else if (equals != nullptr) {
    *equals = '\0';
    form = kWrite;
    // Split on commas, no quoting: "a,,b" has an empty second argument.
    char* arg = equals + 1;
    while (argc < kAtMaxArgs) {
      argv[argc++] = arg;
      char* comma = strchr(arg, ',');
      if (comma == nullptr) break;
      *comma = '\0';
      arg = comma + 1;
    }
  }

  if (same_name(name, "HELP")) {
    if (form != kRun) {
      io_.print("No handler for command! (");
      io_.write(line_, length_);
      io_.print(")\n");
      return true;
    }
    print_help();
    return true;
  }
  const AtCommand* command = find(name);
  if (command == nullptr) {
    io_.print("Command not found! (AT+");
    io_.print(name);
    io_.print(")\n");
    return true;
  }
  if (form == kRun && command->run) return command->run(io_);
  if (form == kRead && command->read) return command->read(io_);
  if (form == kWrite && command->write) return command->write(io_, argv, argc);
  io_.print("No handler for command! (");
  io_.write(line_, length_);
  io_.print(")\n");
  return true;
}

}  // namespace tinyml
