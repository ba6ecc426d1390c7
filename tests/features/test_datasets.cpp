// test_datasets.cpp: the dataset readers. Each test builds a small dataset
// in a temporary folder (a tracks.csv with FMA's two-level header and quoted
// commas/newlines, audio files of one byte: nothing is decoded here) and
// checks the listing: labels, splits, paths and what was skipped and why.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <functional>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "features/datasets.h"
#include "features/utf8.h"
#include "tests/testing.h"

namespace fs = std::filesystem;
using namespace timbre::features;

namespace {

using timbre::testing::TempDir;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// FMA's tracks.csv as pandas writes it: a two-level header whose third row is
// "track_id" and empties. Columns are deliberately not in FMA's order, and
// fields before genre_top hold quoted commas, doubled quotes and newlines so
// that a naive line/comma split would shift the columns.
const char* kHeader =
    ",album,album,set,set,track,track\n"
    ",comments,title,split,subset,title,genre_top\n"
    "track_id,,,,,,\n";

const char* kRows =
    "2,0,\"AWOL - A Way Of Life\",training,small,Food,Hip-Hop\n"
    "5,3,\"Live, at \"\"Home\"\"\",validation,small,\"Line one\nLine two, with comma\",Rock\n"
    "7,0,\"multi\nline\nalbum\",test,small,\"x,y\",Folk\n"
    "9,1,Plain,training,small,T9,Rock\n"
    "10,0,Med,training,medium,T10,Electronic\n"
    "20,0,Large,test,large,T20,Experimental\n"
    "30,0,\"no genre, here\",training,small,T30,\n"
    "40,0,Missing,training,small,T40,Rock\n"
    "50,0,Empty,training,small,T50,Pop\n"
    "60,0,None,training,,T60,Rock\n"
    "98565,0,Bad,training,small,\"known, bad\",Folk\n";

// Audio for every track except 40 (missing) and 50 (empty).
void write_fma(const TempDir& t) {
  t.write("fma_metadata/tracks.csv", std::string(kHeader) + kRows);
  for (int id : {2, 5, 7, 9, 10, 20, 30, 60, 98565})
    t.write(fs::relative(fma_audio_path(t.file("audio"), id), t.path()).string());
  t.write("audio/000/000050.mp3", "");
}

FmaOptions fma_options(const TempDir& t, const std::string& subset) {
  FmaOptions o;
  o.tracks_csv = t.file("fma_metadata/tracks.csv");
  o.audio_dir = t.file("audio");
  o.subset = subset;
  return o;
}

std::vector<int64_t> ids(const DatasetListing& l) {
  std::vector<int64_t> v;
  for (const auto& t : l.tracks) v.push_back(t.id);
  return v;
}

std::map<std::string, std::string> skipped_map(const DatasetListing& l) {
  std::map<std::string, std::string> m;
  for (const auto& s : l.skipped) m[s.what] = s.reason;
  return m;
}

}  // namespace

TEST(Fma, AudioPathIsZeroPaddedWithFolder) {
  EXPECT_EQ(fma_audio_path("/data/fma_small", 2), "/data/fma_small/000/000002.mp3");
  EXPECT_EQ(fma_audio_path("/data/fma_small", 98565), "/data/fma_small/098/098565.mp3");
  EXPECT_EQ(fma_audio_path("a", 155066), "a/155/155066.mp3");
  EXPECT_THROW(fma_audio_path("a", 1000000), std::invalid_argument);
}

TEST(Fma, TwoLevelHeaderQuotedFieldsAndOfficialSplit) {
  TempDir t;
  write_fma(t);
  const DatasetListing l = list_fma(fma_options(t, "small"));
  // Sorted alphabetically over the subset's genre_top values (including
  // tracks skipped later for their audio, so indices do not depend on it).
  EXPECT_EQ(l.label_names, (std::vector<std::string>{"Folk", "Hip-Hop", "Pop", "Rock"}));
  ASSERT_EQ(ids(l), (std::vector<int64_t>{2, 5, 7, 9}));
  struct Want {
    int label;
    Split split;
  };
  const Want want[] = {{1, Split::train}, {3, Split::validation}, {0, Split::test}, {3, Split::train}};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(l.tracks[i].label, want[i].label) << l.tracks[i].name;
    EXPECT_EQ(l.tracks[i].split, want[i].split) << l.tracks[i].name;
    EXPECT_EQ(l.tracks[i].audio, fma_audio_path(t.file("audio"), l.tracks[i].id));
  }
  EXPECT_EQ(l.tracks[1].name, "000005");
  EXPECT_EQ(l.count(Split::train), 2u);
  EXPECT_EQ(l.count(Split::validation), 1u);
  EXPECT_EQ(l.count(Split::test), 1u);

  const auto sk = skipped_map(l);
  ASSERT_EQ(sk.size(), 4u) << ::testing::PrintToString(sk);
  EXPECT_TRUE(contains(sk.at("000030"), "genre_top")) << sk.at("000030");
  EXPECT_TRUE(contains(sk.at("000040"), "audio file missing")) << sk.at("000040");
  EXPECT_TRUE(contains(sk.at("000040"), "audio/000/000040.mp3")) << sk.at("000040");
  EXPECT_TRUE(contains(sk.at("000050"), "empty")) << sk.at("000050");
  EXPECT_EQ(sk.at("098565").rfind("known bad: ", 0), 0u) << sk.at("098565");
  EXPECT_TRUE(contains(l.source, "subset=small"));
  EXPECT_TRUE(contains(l.source, "split=official"));
}

TEST(Fma, SubsetsNest) {
  TempDir t;
  write_fma(t);
  const DatasetListing medium = list_fma(fma_options(t, "medium"));
  EXPECT_EQ(ids(medium), (std::vector<int64_t>{2, 5, 7, 9, 10}));  // medium includes small
  EXPECT_EQ(medium.label_names,
            (std::vector<std::string>{"Electronic", "Folk", "Hip-Hop", "Pop", "Rock"}));
  EXPECT_EQ(medium.tracks[0].label, 2);  // Hip-Hop moved from 1 to 2: labels are per subset
  const DatasetListing large = list_fma(fma_options(t, "large"));
  EXPECT_EQ(ids(large), (std::vector<int64_t>{2, 5, 7, 9, 10, 20}));
  EXPECT_EQ(large.label_names.size(), 6u);
  // Track 60 has no subset value: it is in none of them and not reported.
  EXPECT_EQ(skipped_map(large).count("000060"), 0u);
}

TEST(Fma, WindowsLineEndingsAndNoFinalNewline) {
  TempDir t;
  std::string csv = std::string(kHeader) + "2,0,\"a,\r\nb\",training,small,T,Rock\n" +
                    "3,0,A,test,small,T,Pop";  // last record without a newline
  std::string crlf;
  for (char ch : csv) crlf += ch == '\n' ? std::string("\r\n") : std::string(1, ch);
  t.write("fma_metadata/tracks.csv", crlf);
  t.write("audio/000/000002.mp3");
  t.write("audio/000/000003.mp3");
  const DatasetListing l = list_fma(fma_options(t, "small"));
  EXPECT_EQ(ids(l), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(l.label_names, (std::vector<std::string>{"Pop", "Rock"}));
  ASSERT_EQ(l.tracks.size(), 2u);
  EXPECT_EQ(l.tracks[1].label, 0);
  EXPECT_EQ(l.tracks[1].split, Split::test);
}

TEST(Fma, EveryKnownBadTrackIsReported) {
  TempDir t;
  std::string csv = kHeader;
  for (int64_t id : fma_known_bad()) {
    csv += std::to_string(id) + ",0,A,training,small,T,Rock\n";
    t.write(fs::relative(fma_audio_path(t.file("audio"), id), t.path()).string());
  }
  csv += "3,0,A,training,small,T,Rock\n";
  t.write("audio/000/000003.mp3");
  t.write("fma_metadata/tracks.csv", csv);
  const DatasetListing l = list_fma(fma_options(t, "small"));
  EXPECT_EQ(ids(l), (std::vector<int64_t>{3}));
  const auto sk = skipped_map(l);
  for (const char* id : {"098565", "098567", "098569", "099134", "108925", "133297"}) {
    ASSERT_EQ(sk.count(id), 1u) << id;
    EXPECT_EQ(sk.at(id).rfind("known bad: ", 0), 0u) << sk.at(id);
  }
  EXPECT_EQ(sk.size(), 6u);
}

TEST(Fma, RandomSplitIsReproducibleStratifiedAndSeeded) {
  TempDir t;
  std::string csv = kHeader;
  const char* genres[] = {"Rock", "Folk", "Pop", "Jazz"};
  for (int i = 0; i < 200; ++i) {
    const int id = 1000 + i;
    // Official split all "training": the random mode must ignore it.
    csv += std::to_string(id) + ",0,\"a, b\nc\",training,small,\"t" + std::to_string(i) + "\"," +
           genres[i % 4] + "\n";
    t.write(fs::relative(fma_audio_path(t.file("audio"), id), t.path()).string());
  }
  t.write("fma_metadata/tracks.csv", csv);
  FmaOptions o = fma_options(t, "small");
  o.split = SplitMode::random;
  o.seed = 42;
  const DatasetListing a = list_fma(o), b = list_fma(o);
  ASSERT_EQ(a.tracks.size(), 200u);
  std::map<int, std::array<int, 3>> per_label;
  for (size_t i = 0; i < a.tracks.size(); ++i) {
    EXPECT_EQ(a.tracks[i].split, b.tracks[i].split) << "not reproducible at " << a.tracks[i].name;
    per_label[a.tracks[i].label][int(a.tracks[i].split)]++;
  }
  for (const auto& [label, c] : per_label)  // 50 per genre: 40 / 5 / 5
    EXPECT_EQ(c, (std::array<int, 3>{40, 5, 5})) << a.label_names[label];
  o.seed = 43;
  const DatasetListing c = list_fma(o);
  int differ = 0;
  for (size_t i = 0; i < a.tracks.size(); ++i) differ += a.tracks[i].split != c.tracks[i].split;
  EXPECT_GT(differ, 10) << "another seed should give another split";
  EXPECT_TRUE(contains(a.source, "random seed=42"));
}

TEST(Fma, BadInputsGiveClearErrors) {
  TempDir t;
  write_fma(t);
  // Missing tracks.csv.
  FmaOptions o = fma_options(t, "small");
  o.tracks_csv = t.file("nowhere/tracks.csv");
  std::string e = error_of([&] { list_fma(o); });
  EXPECT_TRUE(contains(e, o.tracks_csv) && contains(e, "not found")) << e;
  // Bad subset name.
  e = error_of([&] { list_fma(fma_options(t, "tiny")); });
  EXPECT_TRUE(contains(e, "\"tiny\"") && contains(e, "small, medium, large") &&
              contains(e, t.file("fma_metadata/tracks.csv")))
      << e;
  // A CSV without ('set','split') and ('track','genre_top').
  const std::string no_split = t.write("no_split.csv",
                                       ",set,track\n,subset,title\ntrack_id,,\n2,small,x\n");
  o.tracks_csv = no_split;
  e = error_of([&] { list_fma(o); });
  EXPECT_TRUE(contains(e, no_split) && contains(e, "('set','split')") &&
              contains(e, "('track','genre_top')") && !contains(e, "('set','subset')"))
      << e;
  // A one-level header (third row is data, not "track_id").
  o.tracks_csv = t.write("one_level.csv",
                         ",set,set,track\n,split,subset,genre_top\n2,training,small,Rock\n");
  e = error_of([&] { list_fma(o); });
  EXPECT_TRUE(contains(e, o.tracks_csv) && contains(e, "track_id")) << e;
  // A genre that is not UTF-8 (Latin-1 "é"): refused by record, escaped.
  o.tracks_csv =
      t.write("latin1.csv", std::string(kHeader) + "2,0,A,training,small,T,Vari\xE9t\xE9\n");
  e = error_of([&] { list_fma(o); });
  EXPECT_TRUE(contains(e, "record 4: genre_top \"Vari\\xE9t\\xE9\" is not valid UTF-8")) << e;
  // A track_id that is not a number.
  o.tracks_csv = t.write("bad_id.csv", std::string(kHeader) + "abc,0,A,training,small,T,Rock\n");
  e = error_of([&] { list_fma(o); });
  EXPECT_TRUE(contains(e, o.tracks_csv) && contains(e, "record 4") && contains(e, "\"abc\"")) << e;
  // A short record.
  o.tracks_csv = t.write("short.csv", std::string(kHeader) + "2,0,A,training\n");
  e = error_of([&] { list_fma(o); });
  EXPECT_TRUE(contains(e, o.tracks_csv) && contains(e, "fewer than")) << e;
  // Only the header rows.
  o.tracks_csv = t.write("header_only.csv", ",set\n,split\n");
  e = error_of([&] { list_fma(o); });
  EXPECT_TRUE(contains(e, o.tracks_csv) && contains(e, "3 header rows")) << e;
}

TEST(Fma, DuplicateTrackIdsAreAnError) {
  TempDir t;
  write_fma(t);
  t.write("fma_metadata/tracks.csv", std::string(kHeader) + kRows +
                                         "9,0,Again,test,small,T9b,Folk\n");
  const std::string e = error_of([&] { list_fma(fma_options(t, "small")); });
  EXPECT_TRUE(contains(e, "tracks.csv: track_id 9 is listed twice, in records 7 and 15")) << e;
}

TEST(SplitRandom, ProportionsPerLabel) {
  const int counts[] = {1, 5, 10, 15, 100, 0};
  std::vector<Track> tracks;
  for (int l = 0; l < 6; ++l)
    for (int i = 0; i < counts[l]; ++i) {
      Track t;
      t.id = int64_t(tracks.size());
      t.label = l;
      t.split = Split::test;  // overwritten
      tracks.push_back(t);
    }
  split_random(tracks, 6, 7);
  std::map<int, std::array<int, 3>> got;
  for (const Track& t : tracks) got[t.label][int(t.split)]++;
  // round(n/10) each to validation and test, the rest to train.
  EXPECT_EQ(got[0], (std::array<int, 3>{1, 0, 0}));
  EXPECT_EQ(got[1], (std::array<int, 3>{3, 1, 1}));
  EXPECT_EQ(got[2], (std::array<int, 3>{8, 1, 1}));
  EXPECT_EQ(got[3], (std::array<int, 3>{11, 2, 2}));
  EXPECT_EQ(got[4], (std::array<int, 3>{80, 10, 10}));
  tracks[0].label = 6;
  EXPECT_THROW(split_random(tracks, 6, 7), std::invalid_argument);
}

TEST(Gtzan, GenresFolderAndStratifiedSplit) {
  TempDir t;
  for (const char* g : {"rock", "blues"})
    for (int i = 0; i < 10; ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "genres/%s/%s.%05d.%s", g, g, i, i % 2 ? "wav" : "au");
      t.write(name);
    }
  t.write("genres/rock/README.txt");   // not audio: ignored
  t.write("genres/rock/.hidden.wav");  // hidden: ignored
  t.write("genres/rock/song.mp3");     // GTZAN takes .wav and .au only
  const DatasetListing a = list_gtzan(t.path(), 5);
  EXPECT_EQ(a.label_names, (std::vector<std::string>{"blues", "rock"}));
  ASSERT_EQ(a.tracks.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(a.tracks[i].id, int64_t(i));
  EXPECT_EQ(a.tracks[0].name, "blues/blues.00000.au");
  EXPECT_EQ(a.tracks[0].audio, t.file("genres/blues/blues.00000.au"));
  EXPECT_EQ(a.tracks[10].label, 1);
  std::map<int, std::array<int, 3>> per;
  for (const Track& tr : a.tracks) per[tr.label][int(tr.split)]++;
  EXPECT_EQ(per[0], (std::array<int, 3>{8, 1, 1}));
  EXPECT_EQ(per[1], (std::array<int, 3>{8, 1, 1}));
  EXPECT_TRUE(a.skipped.empty());
  const DatasetListing b = list_gtzan(t.path(), 5), c = list_gtzan(t.path(), 6);
  int differ = 0;
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_EQ(a.tracks[i].split, b.tracks[i].split);
    differ += a.tracks[i].split != c.tracks[i].split;
  }
  EXPECT_GT(differ, 0);
}

TEST(Gtzan, LabelFoldersDirectlyWithoutGenres) {
  TempDir t;
  t.write("jazz/jazz.00000.wav");
  t.write("jazz/jazz.00001.wav");
  t.write("pop/pop.00000.au");
  const DatasetListing l = list_gtzan(t.path());
  EXPECT_EQ(l.label_names, (std::vector<std::string>{"jazz", "pop"}));
  EXPECT_EQ(l.tracks.size(), 3u);
  EXPECT_TRUE(contains(l.source, "gtzan"));
}

TEST(Folder, ExtensionsEmptyFilesAndStrays) {
  TempDir t;
  t.write("b/q.au");
  t.write("b/empty.wav", "");
  t.write("a/x.MP3");
  t.write("a/y.flac");
  t.write("a/z.ogg");
  t.write("a/notes.txt");
  fs::create_directories(t.file("c"));  // no audio: not a label
  t.write("stray.wav");
  const DatasetListing l = list_folder(t.path(), 1);
  EXPECT_EQ(l.label_names, (std::vector<std::string>{"a", "b"}));
  std::vector<std::string> names;
  for (const Track& tr : l.tracks) names.push_back(tr.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a/x.MP3", "a/y.flac", "a/z.ogg", "b/q.au"}));
  const auto sk = skipped_map(l);
  ASSERT_EQ(sk.size(), 3u) << ::testing::PrintToString(sk);
  EXPECT_TRUE(contains(sk.at(t.file("b/empty.wav")), "empty"));
  EXPECT_TRUE(contains(sk.at(t.file("c")), "no usable audio"));
  EXPECT_TRUE(contains(sk.at(t.file("stray.wav")), "outside a <label>/ folder"));
}

TEST(Folder, EmptyOrMissingFolderIsAnError) {
  TempDir t;
  fs::create_directories(t.file("empty/rock"));
  t.write("empty/rock/readme.txt");
  std::string e = error_of([&] { list_folder(t.file("empty")); });
  EXPECT_TRUE(contains(e, t.file("empty")) && contains(e, "empty")) << e;
  e = error_of([&] { list_gtzan(t.file("empty")); });
  EXPECT_TRUE(contains(e, t.file("empty")) && contains(e, "empty")) << e;
  e = error_of([&] { list_folder(t.file("missing")); });
  EXPECT_TRUE(contains(e, t.file("missing")) && contains(e, "not found")) << e;
}

// Names that are not UTF-8 (a Latin-1 "é" is the single byte 0xE9).
TEST(Utf8, ValidityAndEscapes) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("Hip-Hop"));
  EXPECT_TRUE(is_valid_utf8("caf\xC3\xA9"));             // é, 2 bytes
  EXPECT_TRUE(is_valid_utf8("\xE2\x82\xAC"));           // €, 3 bytes
  EXPECT_TRUE(is_valid_utf8("\xF0\x9F\x8E\xB5"));       // 🎵, 4 bytes
  EXPECT_FALSE(is_valid_utf8("caf\xE9"));                // Latin-1
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));               // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));           // a surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));       // past U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xE2\x82"));               // cut short
  EXPECT_EQ(escape_non_utf8("caf\xE9 \xC3\xA9"), "caf\\xE9 \xC3\xA9");
  EXPECT_EQ(escape_non_utf8("a\\b"), "a\\\\b");            // the escape stays unambiguous
  EXPECT_TRUE(is_valid_utf8(escape_non_utf8("\xFF\xFE\x80")));
}

// A symlink loop is not "missing": the listing says what the system said.
TEST(Folder, SymlinkLoopIsNamedAsSuch) {
  TempDir t;
  fs::create_directories(t.file("data/rock"));
  fs::create_directories(t.file("data/jazz"));
  t.write("data/rock/a.wav", "x");
  t.write("data/jazz/b.wav", "x");
  fs::create_symlink(t.file("data/rock/loop.wav"), t.file("data/rock/loop.wav"));
  const auto s = skipped_map(list_folder(t.file("data")));
  ASSERT_EQ(s.count(t.file("data/rock/loop.wav")), 1u);
  EXPECT_TRUE(contains(s.at(t.file("data/rock/loop.wav")), "cannot reach audio file") &&
              contains(s.at(t.file("data/rock/loop.wav")), "symbolic links"))
      << s.at(t.file("data/rock/loop.wav"));
}

TEST(Folder, LabelFolderNotUtf8IsRefusedByName) {
  TempDir t;
  fs::create_directories(t.file("data/caf\xE9"));
  t.write("data/caf\xE9/a.wav", "x");
  fs::create_directories(t.file("data/rock"));
  t.write("data/rock/b.wav", "x");
  const std::string e = error_of([&] { list_folder(t.file("data")); });
  EXPECT_TRUE(contains(e, "data/caf\\xE9: the label folder's name is not valid UTF-8")) << e;
}
