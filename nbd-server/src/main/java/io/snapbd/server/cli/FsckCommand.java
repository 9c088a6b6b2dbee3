package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.fsck.VolumeChecker;
import io.snapbd.engine.volume.DataDirBusyException;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.api.Json;
import io.snapbd.server.export.ExportName;
import io.snapbd.server.kernel.AttachmentRecord;
import io.snapbd.server.kernel.KernelAttachments;
import io.snapbd.server.service.FileSpaces;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "fsck", mixinStandardHelpOptions = true,
        description = "Verify every file of the data directory's volumes (read-only; the server must be stopped). Exit 0 when clean, 4 when problems are found.")
final class FsckCommand implements Callable<Integer> {

    @CommandLine.Mixin
    Cli.DataDirOption dataDir;

    @Parameters(arity = "0..*", paramLabel = "VOLUME", description = "Volumes to check (default: all).")
    List<String> volumes = new ArrayList<>();

    @Option(names = "--quick", description = "Skip the data scan (blocks not in use must read as zeros).")
    boolean quick;

    @Option(names = "--json", description = "Print JSON.")
    boolean json;

    @Override
    public Integer call() throws IOException {
        ArrayNode out = Json.MAPPER.createArrayNode();
        boolean ok = true;
        try (VolumeCatalog catalog = VolumeCatalog.open(dataDir.resolve(), FileSpaces.best(), false)) {
            List<String> names = volumes.isEmpty() ? catalog.names() : volumes;
            for (String name : names) {
                if (!catalog.exists(name)) {
                    throw new Cli.ExitException(2, "no volume named " + name);
                }
                VolumeChecker.Report r = VolumeChecker.check(catalog.volumeDir(name), !quick);
                ok &= r.ok();
                ObjectNode o = out.addObject();
                o.put("volume", name);
                o.put("ok", r.ok());
                o.put("blocksInUse", r.blocksInUse());
                o.put("blocksScanned", r.blocksScanned());
                r.problems().forEach(o.putArray("problems")::add);
                r.notes().forEach(o.putArray("notes")::add);
                if (!json) {
                    System.out.println(name + ": " + (r.ok() ? "clean" : r.problems().size() + " problem(s)")
                            + " (" + r.blocksInUse() + " blocks in use" + (quick ? "" : ", " + r.blocksScanned() + " unused blocks scanned") + ")");
                    r.problems().forEach(p -> System.out.println("  problem: " + p));
                    r.notes().forEach(n -> System.out.println("  note: " + n));
                }
            }
            ok &= checkAttachmentRecords(catalog, out);
        } catch (DataDirBusyException e) {
            throw new Cli.ExitException(2, e.getMessage() + ": stop the server before fsck");
        } catch (NoSuchFileException e) {
            throw new Cli.ExitException(2, e.getMessage());
        }
        if (json) {
            Cli.printJson(out);
        }
        return ok ? 0 : 4;
    }

    /**
     * DATA_DIR/attachments/nbdN.attach (docs/on-disk-format.md): each record decodes (magic, version, checksum,
     * ranges, name = device), its backend identifier is snapbd:EXPORT and its export's volume exists. One entry
     * {"attachments": ...} in the JSON; nothing printed when there are no records.
     */
    private boolean checkAttachmentRecords(VolumeCatalog catalog, ArrayNode out) throws IOException {
        List<java.nio.file.Path> files = AttachmentRecord.files(dataDir.resolve().resolve(AttachmentRecord.DIR));
        if (files.isEmpty()) {
            return true;
        }
        List<String> problems = new ArrayList<>();
        List<String> notes = new ArrayList<>();
        for (java.nio.file.Path f : files) {
            try {
                AttachmentRecord r = AttachmentRecord.read(f);
                String volume = ExportName.parse(r.export()).volume();
                if (!r.backend().equals(KernelAttachments.BACKEND_PREFIX + r.export())) {
                    problems.add(f + ": backend identifier '" + r.backend() + "' is not snapbd:" + r.export());
                } else if (!catalog.exists(volume)) {
                    problems.add(f + ": " + r.device() + " is recorded for " + r.export() + ", but there is no volume " + volume);
                } else {
                    notes.add(f.getFileName() + ": " + r.device() + " -> " + r.export() + " (reconnected at the next start if the kernel still holds it)");
                }
            } catch (IOException | IllegalArgumentException e) {
                problems.add(e.getMessage());
            }
        }
        ObjectNode o = out.addObject();
        o.put("attachments", files.size());
        o.put("ok", problems.isEmpty());
        problems.forEach(o.putArray("problems")::add);
        notes.forEach(o.putArray("notes")::add);
        if (!json) {
            System.out.println("attachment records: " + (problems.isEmpty() ? "clean" : problems.size() + " problem(s)")
                    + " (" + files.size() + ")");
            problems.forEach(p -> System.out.println("  problem: " + p));
            notes.forEach(n -> System.out.println("  note: " + n));
        }
        return problems.isEmpty();
    }
}
