// Compiled harness around the Verilated tcpdct top: runs a script of steps cycle by cycle and
// logs what the core did. Built and driven by sim/fast_harness.py, which documents the script
// language and the output files; a Python testbench costs ~100 us per cycle, this ~1 us.
//
//   harness SCRIPT OUTDIR        (SCRIPT "-": standard input, read as the script runs)
//
// The script is text, one directive a line; RX, TX and CMD only queue their item on the input
// stream (the streams run concurrently), the WAIT_* directives block the script until the core
// has done something, and events and writes are labelled with the STEP in force when they
// happen.
//
// One eval() per cycle: the Verilog this is built from clocks every register on both edges of
// clk (fast_harness.py rewrites it), so each toggle of clk is a cycle, and the model is evaluated
// a second time in a cycle only when the harness must see outputs that follow inputs it has just
// changed (harness_ports.h, written by fast_harness.py from the Verilated model, says which).

#include "Vtcpdct.h"
#include "verilated.h"
#include "harness_ports.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#ifndef DATA_BYTES
#error "DATA_BYTES (the core's data width in bytes) must be defined"
#endif

namespace {

constexpr size_t RECORD_BYTES = 32;
constexpr uint64_t NEVER = ~0ull;
constexpr int RESET_CYCLES = 8;

// Event codes and header offsets of tcpdct.records; the harness decodes only what it reacts to.
constexpr uint8_t EV_RX_PLACED = 1, EV_BUF_DONE = 2, EV_LEGACY = 3, EV_DROP = 4, EV_CMD_DONE = 5;
constexpr uint8_t OP_POST_BUFFER = 2, OP_POST_LEGACY = 3;

// Port values of any width: Verilator gives 1..64-bit ports as integers, wider ones as VlWide.
template <typename T>
typename std::enable_if<std::is_integral<T>::value>::type
put_bytes(T& port, const uint8_t* bytes, size_t n) {
    uint64_t value = 0;
    for (size_t i = 0; i < n && i < sizeof(T); i++) value |= uint64_t(bytes[i]) << (8 * i);
    port = T(value);
}

template <std::size_t W>
void put_bytes(VlWide<W>& port, const uint8_t* bytes, size_t n) {
    for (size_t word = 0; word < W; word++) {
        uint32_t value = 0;
        for (size_t b = 0; b < 4; b++) {
            size_t i = 4 * word + b;
            if (i < n) value |= uint32_t(bytes[i]) << (8 * b);
        }
        port[word] = value;
    }
}

template <typename T>
typename std::enable_if<std::is_integral<T>::value>::type
get_bytes(const T& port, uint8_t* bytes, size_t n) {
    uint64_t value = port;
    for (size_t i = 0; i < n; i++) bytes[i] = i < sizeof(T) ? uint8_t(value >> (8 * i)) : 0;
}

template <std::size_t W>
void get_bytes(const VlWide<W>& port, uint8_t* bytes, size_t n) {
    for (size_t i = 0; i < n; i++) bytes[i] = uint8_t(port[i / 4] >> (8 * (i % 4)));
}

uint64_t low_mask(size_t n) { return n >= 64 ? ~0ull : (1ull << n) - 1; }

// Stalls: each channel draws from its own generator, so that channels are not in step.
struct Stall {
    uint64_t state = 0x9e3779b97f4a7c15ull;
    unsigned percent = 0;
    bool now() {
        if (!percent) return false;
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        return state % 100 < percent;
    }
};

struct Item {
    std::vector<uint8_t> data;
    bool tuser = false;
};

// An AXI4-Stream source: valid holds, with its data, from the first offer until the transfer.
struct Source {
    std::deque<Item> queue;
    size_t offset = 0;
    bool presenting = false;
    Stall stall;
    uint64_t beats = 0, frames = 0, first_offer = NEVER, last_accept = 0, frame_offer = NEVER;

    template <typename D, typename K>
    void drive(uint64_t cycle, CData& valid, D& data, K& keep, CData& last, CData* user) {
        if (!presenting) {
            if (queue.empty() || stall.now()) { valid = 0; return; }
            presenting = true;
            if (first_offer == NEVER) first_offer = cycle;
            if (frame_offer == NEVER) frame_offer = cycle;
        }
        const Item& item = queue.front();
        size_t n = std::min<size_t>(sizeof_beat, item.data.size() - offset);
        put_bytes(data, item.data.data() + offset, n);
        keep = K(low_mask(n));
        last = offset + n >= item.data.size();
        if (user) *user = last && item.tuser;
        valid = 1;
    }

    // The beat offered was taken; true when it ended the item.
    bool accept(uint64_t cycle) {
        presenting = false;
        beats++;
        last_accept = cycle;
        offset += sizeof_beat;
        if (offset < queue.front().data.size()) return false;
        queue.pop_front();
        offset = 0;
        frames++;
        return true;
    }

    size_t sizeof_beat = DATA_BYTES;
};

struct Burst {
    uint64_t aw_cycle, address;
    uint32_t beats, done = 0;
    uint32_t id;
    uint64_t first_w_cycle = 0, first_byte = 0;
};

struct Beat {
    uint64_t cycle;
    std::vector<uint8_t> data;
    uint64_t strobe;
    bool last;
};

// A legacy ring or a connection's buffer queue that the harness keeps full by itself: every
// buffer the core completes is posted again at once (same slot, fresh tag).
struct AutoQueue {
    uint64_t base = 0;
    uint32_t length = 0;
    std::deque<uint32_t> posted;  // slots, in posting order
};

enum class Op {
    RX, TX, CMD, STEP, WAIT_TERMINAL, WAIT_EVENTS, WAIT_CMD_DONE, WAIT_CMD_IDLE, WAIT_TX_OUT,
    WAIT_RX_IDLE, IDLE, AUTO_LEGACY, AUTO_USER, STALL, TIMEOUT, LOG_WRITES, SETTLE,
};

struct Directive {
    Op op;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    std::string channel;
    Item item;
};

// The value of each hex digit, 0xff for any other character.
struct HexDigits {
    uint8_t value[256];
    HexDigits() {
        std::memset(value, 0xff, sizeof value);
        for (int i = 0; i < 10; i++) value['0' + i] = uint8_t(i);
        for (int i = 0; i < 6; i++) value['a' + i] = value['A' + i] = uint8_t(10 + i);
    }
};

// A replay's script is mostly frames in hex: decoded through a table, straight from the line,
// so that reading it stays small beside the simulation.
std::vector<uint8_t> from_hex(const char* text, size_t length, int line) {
    static const HexDigits digits;
    if (length % 2) {
        std::fprintf(stderr, "harness: script line %d: odd number of hex digits\n", line);
        std::exit(2);
    }
    std::vector<uint8_t> bytes(length / 2);
    uint8_t invalid = 0;
    for (size_t i = 0; i < bytes.size(); i++) {
        uint8_t high = digits.value[uint8_t(text[2 * i])];
        uint8_t low = digits.value[uint8_t(text[2 * i + 1])];
        invalid |= (high | low) & 0xf0;
        bytes[i] = uint8_t(high << 4 | low);
    }
    if (invalid) {
        std::fprintf(stderr, "harness: script line %d: not a hex digit\n", line);
        std::exit(2);
    }
    return bytes;
}

const std::unordered_map<std::string, Op>& directive_names() {
    static const std::unordered_map<std::string, Op> ops = {
        {"RX", Op::RX}, {"TX", Op::TX}, {"CMD", Op::CMD}, {"STEP", Op::STEP},
        {"WAIT_TERMINAL", Op::WAIT_TERMINAL}, {"WAIT_EVENTS", Op::WAIT_EVENTS},
        {"WAIT_CMD_DONE", Op::WAIT_CMD_DONE}, {"WAIT_CMD_IDLE", Op::WAIT_CMD_IDLE},
        {"WAIT_TX_OUT", Op::WAIT_TX_OUT}, {"WAIT_RX_IDLE", Op::WAIT_RX_IDLE},
        {"IDLE", Op::IDLE}, {"AUTO_LEGACY", Op::AUTO_LEGACY}, {"AUTO_USER", Op::AUTO_USER},
        {"STALL", Op::STALL}, {"TIMEOUT", Op::TIMEOUT}, {"LOG_WRITES", Op::LOG_WRITES},
        {"SETTLE", Op::SETTLE},
    };
    return ops;
}

// The script, a directive at a time, from a file or ("-") from standard input. Read as the
// simulation needs it, so that a replay can write the script while the harness already runs
// it; the time spent reading (and waiting for) the script is kept apart from the simulation's.
class ScriptReader {
public:
    explicit ScriptReader(const char* path) {
        if (std::string(path) == "-") {
            in_ = &std::cin;
            return;
        }
        file_.open(path);
        if (!file_) { std::fprintf(stderr, "harness: cannot read %s\n", path); std::exit(2); }
        in_ = &file_;
    }

    int line_number() const { return number_; }
    double seconds() const { return seconds_; }

    // The next directive into d; false at the end of the script.
    bool next(Directive& d) {
        auto started = std::chrono::steady_clock::now();
        bool found = parse_next(d);
        seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now()
                                                  - started).count();
        return found;
    }

private:
    bool parse_next(Directive& d) {
        std::string text;
        while (std::getline(*in_, text)) {
            number_++;
            std::istringstream line(text);
            std::string word;
            if (!(line >> word) || word[0] == '#') continue;
            auto found = directive_names().find(word);
            if (found == directive_names().end()) {
                std::fprintf(stderr, "harness: script line %d: unknown directive %s\n",
                             number_, word.c_str());
                std::exit(2);
            }
            d = Directive{found->second};
            parse_arguments(text, line, d);
            return true;
        }
        return false;
    }

    // The last word of the line, which holds the hex of a frame or command, decoded in place.
    std::vector<uint8_t> hex_argument(const std::string& text, std::istringstream& line) {
        line >> std::ws;
        size_t start = line.fail() || line.eof() ? text.size() : size_t(line.tellg());
        size_t end = text.find_last_not_of(" \t\r") + 1;
        if (start >= end || text.find_first_of(" \t", start) < end) {
            std::fprintf(stderr, "harness: script line %d: bad arguments\n", number_);
            std::exit(2);
        }
        line.seekg(0, std::ios::end);
        return from_hex(text.data() + start, end - start, number_);
    }

    void parse_arguments(const std::string& text, std::istringstream& line, Directive& d) {
        switch (d.op) {
        case Op::RX:
            line >> d.a;
            d.item.tuser = d.a;
            d.item.data = hex_argument(text, line);
            break;
        case Op::TX: case Op::CMD:
            d.item.data = hex_argument(text, line);
            if (d.op == Op::CMD && d.item.data.size() != RECORD_BYTES) {
                std::fprintf(stderr, "harness: script line %d: a command is %zu bytes\n",
                             number_, RECORD_BYTES);
                std::exit(2);
            }
            break;
        case Op::AUTO_LEGACY:
            line >> std::hex >> d.a >> std::dec >> d.b >> d.c;
            break;
        case Op::AUTO_USER:
            line >> d.d >> std::hex >> d.a >> std::dec >> d.b >> d.c;
            break;
        case Op::STALL:
            line >> d.channel >> d.a >> d.b;
            break;
        case Op::WAIT_CMD_IDLE: case Op::WAIT_RX_IDLE:
            break;
        default:
            line >> d.a;
        }
        if (line.fail()) {
            std::fprintf(stderr, "harness: script line %d: bad arguments\n", number_);
            std::exit(2);
        }
    }

    std::ifstream file_;
    std::istream* in_ = nullptr;
    int number_ = 0;
    double seconds_ = 0;
};

FILE* open_output(const std::string& dir, const char* name) {
    std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) { std::fprintf(stderr, "harness: cannot write %s\n", path.c_str()); std::exit(2); }
    return f;
}

template <typename T> void put(FILE* f, T value) { std::fwrite(&value, sizeof value, 1, f); }

class Harness {
public:
    Harness(const char* script_path, const std::string& out)
        : script_(script_path),
          events_(open_output(out, "events.bin")), writes_(open_output(out, "writes.bin")),
          bursts_(open_output(out, "bursts.bin")), tx_(open_output(out, "tx.bin")),
          rx_(open_output(out, "rx.bin")), commands_(open_output(out, "commands.bin")),
          stored_(open_output(out, "stored.bin")), out_(out) {
        context_.randReset(0);
        top_ = new Vtcpdct{&context_};
        cmd_source_.sizeof_beat = RECORD_BYTES;
    }

    int run() {
        auto started = std::chrono::steady_clock::now();
        reset();
        uint64_t waited = 0;
        Directive d;
        bool more = script_.next(d);
        while (more) {
            if (!execute(d)) {
                // IDLE is counted down in execute(); only the waits can hang.
                if (d.op != Op::IDLE && ++waited > timeout_) {
                    std::fprintf(stderr, "harness: script line %d timed out after %llu cycles "
                                 "(events %llu, terminal %llu, cmd_done %llu, tx out %llu)\n",
                                 script_.line_number(), (unsigned long long)timeout_,
                                 (unsigned long long)n_events_, (unsigned long long)n_terminal_,
                                 (unsigned long long)n_cmd_done_, (unsigned long long)tx_out_);
                    timeouts_++;
                    waited = 0;
                    more = script_.next(d);
                    continue;
                }
                cycle();
                continue;
            }
            waited = 0;
            more = script_.next(d);
        }
        double wall = std::chrono::duration<double>(std::chrono::steady_clock::now()
                                                    - started).count();
        write_counters(wall - script_.seconds(), script_.seconds());
        flush_stored();
        for (FILE* f : {events_, writes_, bursts_, tx_, rx_, commands_, stored_}) std::fclose(f);
        top_->final();
        delete top_;
        return 0;
    }

private:
    // True when the directive is done; a WAIT that is not satisfied yet returns false and the
    // caller runs a cycle before asking again. IDLE counts its cycles down in place.
    bool execute(Directive& d) {
        switch (d.op) {
        case Op::RX: rx_source_.queue.push_back(std::move(d.item)); return true;
        case Op::TX: tx_source_.queue.push_back(std::move(d.item)); return true;
        case Op::CMD: queue_command(d.item.data); return true;
        case Op::STEP: step_ = uint32_t(d.a); return true;
        case Op::WAIT_TERMINAL: return n_terminal_ >= d.a;
        case Op::WAIT_EVENTS: return n_events_ >= d.a;
        case Op::WAIT_CMD_DONE: return n_cmd_done_ >= d.a;
        case Op::WAIT_CMD_IDLE: return cmd_source_.queue.empty() && !cmd_source_.presenting
                                       && n_cmd_done_ == cmd_source_.frames;
        case Op::WAIT_TX_OUT: return tx_out_ >= d.a;
        case Op::WAIT_RX_IDLE: return rx_source_.queue.empty();
        case Op::IDLE:
            if (d.a == 0) return true;
            d.a--;
            return false;
        case Op::AUTO_LEGACY:
            legacy_auto_ = true;
            legacy_.base = d.a;
            legacy_.length = uint32_t(d.b);
            for (uint32_t slot = 0; slot < d.c; slot++) post(legacy_, OP_POST_LEGACY, 0, slot);
            return true;
        case Op::AUTO_USER: {
            AutoQueue& queue = user_[uint16_t(d.d)];
            queue.base = d.a;
            queue.length = uint32_t(d.b);
            for (uint32_t slot = 0; slot < d.c; slot++)
                post(queue, OP_POST_BUFFER, uint16_t(d.d), slot);
            return true;
        }
        case Op::STALL: {
            Stall* stall = stall_of(d.channel);
            if (!stall) {
                std::fprintf(stderr, "harness: no channel %s\n", d.channel.c_str());
                std::exit(2);
            }
            stall->percent = unsigned(d.a);
            stall->state ^= d.b * 0x2545f4914f6cdd1dull + 1;
            return true;
        }
        case Op::TIMEOUT: timeout_ = d.a; return true;
        case Op::LOG_WRITES: log_writes_ = d.a != 0; return true;
        case Op::SETTLE: settle_always_ = d.a != 0; return true;
        }
        return true;
    }

    Stall* stall_of(const std::string& name) {
        if (name == "rx") return &rx_source_.stall;
        if (name == "tx") return &tx_source_.stall;
        if (name == "cmd") return &cmd_source_.stall;
        if (name == "evt") return &evt_stall_;
        if (name == "tx_out") return &tx_out_stall_;
        if (name == "aw") return &aw_stall_;
        if (name == "w") return &w_stall_;
        if (name == "b") return &b_stall_;
        return nullptr;
    }

    void queue_command(const std::vector<uint8_t>& record) {
        Item item;
        item.data = record;
        cmd_source_.queue.push_back(std::move(item));
    }

    void post(AutoQueue& queue, uint8_t opcode, uint16_t index, uint32_t slot) {
        std::vector<uint8_t> record(RECORD_BYTES, 0);
        uint64_t address = queue.base + uint64_t(slot) * queue.length;
        uint32_t tag = 0x40000000u + auto_tag_++;
        record[0] = opcode;
        record[2] = uint8_t(index);
        record[3] = uint8_t(index >> 8);
        std::memcpy(&record[4], &address, 8);
        std::memcpy(&record[12], &queue.length, 4);
        std::memcpy(&record[16], &tag, 4);
        queue.posted.push_back(slot);
        queue_command(record);
    }

    void reset() {
        top_->rst = 1;
        top_->clk = 0;
        top_->eval();    // initial values; clk's next toggle is the first cycle's edge
        inputs_changed();
        for (int i = 0; i < RESET_CYCLES; i++) cycle();
        top_->rst = 0;
        for (int i = 0; i < RESET_CYCLES; i++) cycle();
    }

    void cycle() {
        Vtcpdct& t = *top_;
        const bool in_reset = t.rst;
        if (in_reset) {
            t.s_axis_rx_tvalid = t.s_axis_tx_tvalid = t.s_axis_cmd_tvalid = 0;
        } else {
            rx_source_.drive(cycle_, t.s_axis_rx_tvalid, t.s_axis_rx_tdata, t.s_axis_rx_tkeep,
                             t.s_axis_rx_tlast, &t.s_axis_rx_tuser);
            tx_source_.drive(cycle_, t.s_axis_tx_tvalid, t.s_axis_tx_tdata, t.s_axis_tx_tkeep,
                             t.s_axis_tx_tlast, nullptr);
            cmd_source_.drive(cycle_, t.s_axis_cmd_tvalid, t.s_axis_cmd_tdata,
                              t.s_axis_cmd_tkeep, t.s_axis_cmd_tlast, nullptr);
        }
        t.m_axis_evt_tready = !evt_stall_.now();
        t.m_axis_tx_tready = !tx_out_stall_.now();
        t.m_axi_awready = !aw_stall_.now();
        t.m_axi_wready = !w_stall_.now();
        if (!b_presenting_ && !responses_.empty() && !b_stall_.now()) b_presenting_ = true;
        t.m_axi_bvalid = b_presenting_;
        t.m_axi_bid = b_presenting_ ? responses_.front() : 0;
        t.m_axi_bresp = 0;

        // The previous eval() left every output settled for the inputs it saw; only an output
        // that follows the inputs can have moved since, and only if they changed.
        bool changed = inputs_changed();
        if (!in_reset && (settle_always_ || (changed && outputs_follow_inputs()))) t.eval();
        if (!in_reset) sample();

        t.clk = !t.clk;
        t.eval();
        cycle_++;
    }

    // Whether the inputs differ from those of the last eval(), which they become.
    bool inputs_changed() {
        const Vtcpdct& t = *top_;
        uint8_t now[sizeof inputs_];
        size_t size = 0;
        auto add = [&](const auto& port) {
            static_assert(sizeof port <= sizeof now, "an input wider than the snapshot");
            if (size + sizeof port > sizeof now) {
                std::fprintf(stderr, "harness: the inputs do not fit the snapshot\n");
                std::exit(2);
            }
            std::memcpy(now + size, &port, sizeof port);
            size += sizeof port;
        };
#define HARNESS_ADD_INPUT(name) add(t.name);
        HARNESS_INPUTS(HARNESS_ADD_INPUT)
#undef HARNESS_ADD_INPUT
        if (std::memcmp(now, inputs_, size) == 0) return false;
        std::memcpy(inputs_, now, size);
        return true;
    }

    // Whether sample() may read, this cycle, an output that follows the inputs: the ready of an
    // input stream only matters while the harness offers a beat on it.
    bool outputs_follow_inputs() const {
        const Vtcpdct& t = *top_;
        using namespace follows_inputs;
        return (t.s_axis_rx_tvalid && s_axis_rx_tready) || (t.s_axis_tx_tvalid && s_axis_tx_tready)
            || (t.s_axis_cmd_tvalid && s_axis_cmd_tready) || other_outputs;
    }

    void sample() {
        Vtcpdct& t = *top_;
        if (t.s_axis_rx_tvalid && t.s_axis_rx_tready) {
            if (rx_source_.accept(cycle_)) {
                put(rx_, rx_source_.frame_offer);
                put(rx_, cycle_);
                rx_source_.frame_offer = NEVER;
            }
        }
        if (t.s_axis_tx_tvalid && t.s_axis_tx_tready) tx_source_.accept(cycle_);
        if (t.s_axis_cmd_tvalid && t.s_axis_cmd_tready) {
            put(commands_, cycle_);
            std::fwrite(cmd_source_.queue.front().data.data(), 1, RECORD_BYTES, commands_);
            cmd_source_.accept(cycle_);
        }
        if (t.m_axis_evt_tvalid && t.m_axis_evt_tready) {
            uint8_t record[RECORD_BYTES];
            get_bytes(t.m_axis_evt_tdata, record, RECORD_BYTES);
            on_event(record);
        }
        if (t.m_axis_tx_tvalid && t.m_axis_tx_tready) {
            uint8_t beat[DATA_BYTES];
            get_bytes(t.m_axis_tx_tdata, beat, DATA_BYTES);
            uint64_t keep = uint64_t(t.m_axis_tx_tkeep);
            for (size_t i = 0; i < DATA_BYTES; i++)
                if (keep >> i & 1) tx_frame_.push_back(beat[i]);
            if (t.m_axis_tx_tlast) {
                put(tx_, cycle_);
                put(tx_, step_);
                put(tx_, uint32_t(tx_frame_.size()));
                std::fwrite(tx_frame_.data(), 1, tx_frame_.size(), tx_);
                tx_frame_.clear();
                tx_out_++;
            }
        }
        if (t.m_axi_awvalid && t.m_axi_awready) {
            bursts_pending_.push_back(Burst{cycle_, uint64_t(t.m_axi_awaddr),
                                            uint32_t(t.m_axi_awlen) + 1, 0,
                                            uint32_t(t.m_axi_awid)});
            n_aw_++;
        }
        if (t.m_axi_wvalid && t.m_axi_wready) {
            Beat beat{cycle_, std::vector<uint8_t>(DATA_BYTES), uint64_t(t.m_axi_wstrb),
                      bool(t.m_axi_wlast)};
            get_bytes(t.m_axi_wdata, beat.data.data(), DATA_BYTES);
            beats_pending_.push_back(std::move(beat));
            n_w_++;
        }
        if (b_presenting_ && t.m_axi_bready) {
            responses_.pop_front();
            b_presenting_ = false;
            n_b_++;
        }
        match_beats();
    }

    // W beats may run ahead of their AW; they are matched to bursts in order (one ID).
    void match_beats() {
        while (!bursts_pending_.empty() && !beats_pending_.empty()) {
            Burst& burst = bursts_pending_.front();
            Beat& beat = beats_pending_.front();
            uint64_t aligned = burst.address & ~uint64_t(DATA_BYTES - 1);
            uint64_t address = aligned + uint64_t(burst.done) * DATA_BYTES;
            if (burst.done == 0) {
                burst.first_w_cycle = beat.cycle;
                burst.first_byte = address;
                for (size_t lane = 0; lane < DATA_BYTES; lane++)
                    if (beat.strobe >> lane & 1) { burst.first_byte = address + lane; break; }
            }
            // Recorded with its last beat, whose cycle is that of the first write of a frame
            // placed right after the one before (the DMA writer completes the beat where the
            // two join with the later one's first bytes).
            if (burst.done + 1 == burst.beats) {
                put(bursts_, burst.aw_cycle);
                put(bursts_, burst.first_w_cycle);
                put(bursts_, burst.address);
                put(bursts_, burst.first_byte);
                put(bursts_, burst.beats);
                put(bursts_, step_);
                put(bursts_, beat.cycle);
            }
            if (log_writes_) {
                put(writes_, beat.cycle);
                put(writes_, step_);
                put(writes_, uint32_t(beat.last != (burst.done + 1 == burst.beats)));
                put(writes_, address);
                put(writes_, beat.strobe);
                std::fwrite(beat.data.data(), 1, DATA_BYTES, writes_);
            }
            store(address, beat.strobe, beat.data.data());
            if (beat.last != (burst.done + 1 == burst.beats)) wlast_errors_++;
            beats_pending_.pop_front();
            if (++burst.done == burst.beats) {
                responses_.push_back(burst.id);
                bursts_pending_.pop_front();
            }
        }
    }

    // The strobed bytes of a beat, appended to the run of consecutive addresses the step is
    // writing, or starting a new one: stored.bin has a record per run where writes.bin has one
    // per beat, and it is what a replay compares with the model's writes.
    void store(uint64_t address, uint64_t strobe, const uint8_t* data) {
        for (size_t lane = 0; lane < DATA_BYTES; lane++) {
            if (!(strobe >> lane & 1)) continue;
            uint64_t at = address + lane;
            if (run_.empty() || run_step_ != step_ || run_address_ + run_.size() != at) {
                flush_stored();
                run_step_ = step_;
                run_address_ = at;
            }
            run_.push_back(data[lane]);
        }
    }

    void flush_stored() {
        if (run_.empty()) return;
        put(stored_, run_step_);
        put(stored_, uint32_t(run_.size()));
        put(stored_, run_address_);
        std::fwrite(run_.data(), 1, run_.size(), stored_);
        run_.clear();
    }

    void on_event(const uint8_t* record) {
        put(events_, cycle_);
        put(events_, step_);
        put(events_, uint32_t(0));
        std::fwrite(record, 1, RECORD_BYTES, events_);
        n_events_++;
        uint8_t code = record[0];
        uint16_t index = uint16_t(record[2] | record[3] << 8);
        if (code == EV_RX_PLACED || code == EV_LEGACY || code == EV_DROP) n_terminal_++;
        if (code == EV_CMD_DONE) {
            n_cmd_done_++;
            if (record[5] != 0) cmd_errors_++;
        }
        if (code == EV_LEGACY && legacy_auto_ && !legacy_.posted.empty()) {
            uint32_t slot = legacy_.posted.front();
            legacy_.posted.pop_front();
            post(legacy_, OP_POST_LEGACY, 0, slot);
        }
        if (code == EV_BUF_DONE) {
            auto found = user_.find(index);
            if (found != user_.end() && !found->second.posted.empty()) {
                uint32_t slot = found->second.posted.front();
                found->second.posted.pop_front();
                post(found->second, OP_POST_BUFFER, index, slot);
            }
        }
    }

    void write_counters(double wall, double script) {
        FILE* f = open_output(out_, "counters.json");
        auto field = [&](const char* name, unsigned long long value, bool last = false) {
            std::fprintf(f, "  \"%s\": %llu%s\n", name, value, last ? "" : ",");
        };
        auto cycle_or_null = [&](const char* name, uint64_t value) {
            if (value == NEVER) std::fprintf(f, "  \"%s\": null,\n", name);
            else field(name, value);
        };
        std::fprintf(f, "{\n  \"wall_seconds\": %.6f,\n", wall);
        std::fprintf(f, "  \"script_seconds\": %.6f,\n", script);
        field("data_bytes", DATA_BYTES);
        field("cycles", cycle_);
        field("reset_cycles", 2 * RESET_CYCLES);
        field("rx_beats", rx_source_.beats);
        field("rx_frames", rx_source_.frames);
        cycle_or_null("rx_first_offer", rx_source_.first_offer);
        field("rx_last_accept", rx_source_.last_accept);
        field("tx_in_beats", tx_source_.beats);
        field("tx_in_frames", tx_source_.frames);
        cycle_or_null("tx_first_offer", tx_source_.first_offer);
        field("tx_last_accept", tx_source_.last_accept);
        field("tx_out_frames", tx_out_);
        field("commands", cmd_source_.frames);
        field("cmd_done", n_cmd_done_);
        field("cmd_errors", cmd_errors_);
        field("events", n_events_);
        field("terminal_events", n_terminal_);
        field("aw", n_aw_);
        field("w", n_w_);
        field("b", n_b_);
        field("wlast_errors", wlast_errors_);
        field("unmatched_beats", beats_pending_.size());
        field("open_bursts", bursts_pending_.size() + responses_.size());
        field("timeouts", timeouts_, true);
        std::fprintf(f, "}\n");
        std::fclose(f);
    }

    VerilatedContext context_;
    Vtcpdct* top_ = nullptr;
    ScriptReader script_;
    FILE *events_, *writes_, *bursts_, *tx_, *rx_, *commands_, *stored_;
    std::string out_;

    uint8_t inputs_[1024] = {};
    uint64_t cycle_ = 0, timeout_ = 200000;
    uint32_t step_ = 0;
    bool log_writes_ = true, settle_always_ = false;
    std::vector<uint8_t> run_;
    uint32_t run_step_ = 0;
    uint64_t run_address_ = 0;
    Source rx_source_, tx_source_, cmd_source_;
    Stall evt_stall_, tx_out_stall_, aw_stall_, w_stall_, b_stall_;
    std::vector<uint8_t> tx_frame_;
    std::deque<Burst> bursts_pending_;
    std::deque<Beat> beats_pending_;
    std::deque<uint32_t> responses_;
    bool b_presenting_ = false;
    bool legacy_auto_ = false;
    AutoQueue legacy_;
    std::unordered_map<uint16_t, AutoQueue> user_;
    uint32_t auto_tag_ = 0;
    uint64_t n_events_ = 0, n_terminal_ = 0, n_cmd_done_ = 0, cmd_errors_ = 0, tx_out_ = 0;
    uint64_t n_aw_ = 0, n_w_ = 0, n_b_ = 0, wlast_errors_ = 0, timeouts_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s SCRIPT OUTDIR\n", argv[0]);
        return 2;
    }
    std::ios::sync_with_stdio(false);
    Harness harness(argv[1], argv[2]);
    return harness.run();
}
